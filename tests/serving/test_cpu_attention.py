"""studyhall_sdpa: the folded grouped-query decode path gives transformers' sdpa outputs."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from studyhall.serving.cpu_attention import NAME, use_cpu_attention  # noqa: E402
from studyhall.serving.kv_cache import new_cache  # noqa: E402


def tiny_gqa_model() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.Qwen2Config(
        vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=8,
        num_key_value_heads=2, max_position_embeddings=128,
    )
    return transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()


def decode(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, steps: int = 4) -> torch.Tensor:
    """Greedy decode with the cache; returns the logits of every step, stacked."""
    out = model(input_ids=ids, attention_mask=mask, cache=new_cache(model.config), use_cache=True)
    cache, logits = out.cache, [out.logits[:, -1]]
    for _ in range(steps):
        mask = torch.cat([mask, torch.ones(mask.shape[0], 1, dtype=mask.dtype)], 1)
        nxt = logits[-1].argmax(-1, keepdim=True)
        out = model(input_ids=nxt, attention_mask=mask, cache=cache, use_cache=True)
        cache = out.cache
        logits.append(out.logits[:, -1])
    return torch.stack(logits)


@pytest.mark.parametrize("padded", [False, True], ids=["unmasked", "left-padded"])
def test_same_logits_as_sdpa(padded):
    model = tiny_gqa_model()
    ids = torch.randint(0, 97, (3, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    if padded:
        mask[0, :4] = 0
    with torch.inference_mode():
        reference = decode(model, ids, mask)
        assert use_cpu_attention(model) and model.config._attn_implementation == NAME
        ours = decode(model, ids, mask)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def test_the_folded_path_runs_for_unmasked_decode_steps(monkeypatch):
    """The point of it: a one-token query with no mask does not reach transformers' sdpa."""
    import transformers.integrations.sdpa_attention as sdpa

    model = tiny_gqa_model()
    use_cpu_attention(model)
    shapes: list[tuple[int, ...]] = []
    real = sdpa.sdpa_attention_forward

    def spy(module, query, *args, **kwargs):
        shapes.append(tuple(query.shape))
        return real(module, query, *args, **kwargs)

    monkeypatch.setattr(sdpa, "sdpa_attention_forward", spy)
    ids = torch.randint(0, 97, (1, 6), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        decode(model, ids, torch.ones_like(ids), steps=3)
    assert shapes and all(s[2] == 6 for s in shapes)  # only the prefill (6 query tokens) went there


def test_only_cpu_sdpa_models_switch():
    model = transformers.AutoModelForCausalLM.from_config(tiny_gqa_model().config, attn_implementation="eager")
    assert not use_cpu_attention(model)
    assert model.config._attn_implementation == "eager"
