"""studyhall's grouped LoRA ops for vLLM on CPU against vLLM's per-token formula (copied
here as the reference: gather each token's adapter weights, then einsum)."""

from __future__ import annotations

import pytest
import torch

from studyhall.serving import vllm_cpu_lora as ops


def reference(inputs, weights, indices, dtype):
    selected = weights[indices].to(dtype=dtype)
    if selected.dim() == 4:
        selected = selected.squeeze(1)
    return torch.einsum("bi, boi -> bo", inputs.to(dtype=dtype), selected)


@pytest.mark.parametrize("indices", [[0, 0, 0, 0, 0], [2, 0, 1, 2, -1], [-1, -1, 3, 3, 1], []])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grouped_matmul_matches_the_per_token_formula(indices, dtype):
    gen = torch.Generator().manual_seed(0)
    weights = torch.randn(4, 1, 24, 16, generator=gen).to(torch.bfloat16)  # [loras, 1, out, in]
    inputs = torch.randn(len(indices), 16, generator=gen)
    idx = torch.tensor(indices, dtype=torch.long)
    got = ops.grouped_matmul(inputs, weights, idx, dtype)
    want = reference(inputs, weights, idx, dtype)
    assert got.shape == want.shape == (len(indices), 24) and got.dtype == dtype
    torch.testing.assert_close(got, want, rtol=2e-2 if dtype == torch.bfloat16 else 1e-5, atol=1e-2)


def test_the_ops_write_like_vllms():
    gen = torch.Generator().manual_seed(1)
    idx = torch.tensor([1, 0, 1], dtype=torch.long)
    x = torch.randn(3, 16, generator=gen)
    a = torch.randn(2, 1, 8, 16, generator=gen)  # shrink: in 16 -> rank 8
    b = torch.randn(2, 1, 32, 8, generator=gen)  # expand: rank 8 -> out 32

    buf = torch.zeros(3, 8)
    ops.bgmv_shrink(x, a, buf, idx, scaling=0.5)
    torch.testing.assert_close(buf, 0.5 * reference(x, a, idx, torch.float32))

    y = torch.ones(3, 40)
    ops.bgmv_expand(buf, b, y, idx, add_inputs=True)
    want = torch.ones(3, 40)
    want[:, :32] += reference(buf, b, idx, torch.float32)
    torch.testing.assert_close(y, want)

    y = torch.ones(3, 48)
    ops.bgmv_expand_slice(buf, b, y, idx, slice_offset=8, slice_size=32, add_inputs=False)
    want = torch.ones(3, 48)
    want[:, 8:40] = reference(buf, b, idx, torch.float32)
    torch.testing.assert_close(y, want)

    # The prefill (sgmv) forms: one adapter index per sequence, expanded over its tokens.
    seq_idx, lens = torch.tensor([0, 1]), torch.tensor([2, 1])
    buf2 = torch.zeros(3, 8)
    ops.sgmv_shrink(x, a, buf2, None, lens, seq_idx, 2, 2, 3, 0.5)
    torch.testing.assert_close(buf2, 0.5 * reference(x, a, torch.tensor([0, 0, 1]), torch.float32))


def test_install_without_vllm_changes_nothing(monkeypatch):
    """Where vLLM (or its CPU punica modules) cannot be imported, install() says so and
    patches nothing; tests/vllm check the ops it installs into a real vLLM."""
    import sys

    for name in ("vllm", "vllm.lora", "vllm.lora.ops", "vllm.lora.ops.torch_ops",
                 "vllm.lora.ops.torch_ops.lora_ops", "vllm.lora.punica_wrapper",
                 "vllm.lora.punica_wrapper.punica_cpu"):
        monkeypatch.setitem(sys.modules, name, None)  # `import` of a None entry raises ImportError
    monkeypatch.setattr(ops, "_installed", False)
    assert ops.install() is False
    assert ops._installed is False
