"""Prepacked (oneDNN) linear layers: same outputs as F.linear, reversible, autograd falls back,
and peft still wraps the layers for LoRA."""

from __future__ import annotations

import pytest
import torch

from studyhall.serving.cpu_linear import can_pack, pack_linears, unpack_linears

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="no oneDNN in this torch")


def tiny(dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.SiLU(), torch.nn.Linear(64, 16, bias=False)).to(dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(1, 32), (8, 32), (2, 5, 32)])
def test_packed_layers_give_the_same_outputs(dtype, shape):
    model = tiny(dtype)
    x = torch.randn(*shape).to(dtype)
    with torch.inference_mode():
        plain = model(x)
    assert can_pack(model) and pack_linears(model) == 2
    assert pack_linears(model) == 0  # already packed: nothing to do
    with torch.inference_mode():
        packed = model(x)
    torch.testing.assert_close(packed, plain, rtol=1e-2 if dtype == torch.bfloat16 else 1e-5, atol=1e-3)
    assert unpack_linears(model) == 2 and "forward" not in vars(model[0])
    with torch.inference_mode():
        torch.testing.assert_close(model(x), plain)


def test_training_still_gets_gradients():
    model = tiny(torch.float32)
    pack_linears(model)
    loss = model(torch.randn(4, 32)).sum()  # grad mode: the plain F.linear path
    loss.backward()
    assert model[0].weight.grad is not None and model[0].weight.grad.abs().sum() > 0


def test_peft_wraps_packed_layers():
    peft = pytest.importorskip("peft")

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.up = torch.nn.Linear(32, 64)
            self.down = torch.nn.Linear(64, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.down(torch.nn.functional.silu(self.up(x)))

    torch.manual_seed(0)
    net = Net().to(torch.bfloat16)
    x = torch.randn(3, 32).to(torch.bfloat16)
    pack_linears(net)
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["up", "down"], init_lora_weights=False)
    model = peft.get_peft_model(net, cfg).eval()
    with torch.inference_mode():
        with_lora = model(x)
        with model.disable_adapter():
            base = model(x)
    unpack_linears(model)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), with_lora, rtol=1e-2, atol=1e-3)
    assert not torch.equal(with_lora, base)


def test_gpu_or_half_weights_are_left_alone():
    assert pack_linears(tiny(torch.float16)) == 0
