"""Attention for decode steps on CPU without torch's slow grouped-query kernel.

transformers' ``sdpa`` attention hands a decode step (one query token) with no mask to
``scaled_dot_product_attention(..., enable_gqa=True)``: that happens whenever no row of the
batch is padded, e.g. always for a single stream. On CPU that kernel is ~10x slower than the same
attention with the query heads folded onto their key/value head (measured here, bf16, 2 threads,
300 cached tokens, Qwen2.5-0.5B's 14 query / 2 key-value heads: 5.2 vs 0.39 ms per layer for 8
rows, 0.71 vs 0.07 for one), which transformers itself does when a mask is present. On the
default model that was ~17 ms of a ~100 ms single-stream step and ~125 ms of an 8-row step.

``use_cpu_attention(model)`` switches a loaded model to ``studyhall_sdpa``: the folded form for
unmasked one-token queries on CPU, transformers' ``sdpa`` for everything else (same masks, same
numbers up to bf16 rounding order).
"""

from __future__ import annotations

from typing import Any

NAME = "studyhall_sdpa"
_registered = False


def decode_sdpa_forward(
    module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
    scaling: float | None = None, is_causal: bool | None = None, **kwargs: Any,
) -> tuple[Any, None]:
    """An ``AttentionInterface`` function: [batch, heads, q, dim] in, [batch, q, heads, dim] out."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    batch, heads, q_len, dim = query.shape
    if (q_len != 1 or groups <= 1 or attention_mask is not None or query.device.type != "cpu"
            or kwargs.get("position_bias") is not None or kwargs.get("softcap") is not None
            or key.shape[-1] != value.shape[-1]):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    # Query heads h*groups .. h*groups+groups-1 share key/value head h: put them on the query axis.
    folded = query.reshape(batch, heads // groups, groups, dim)
    out = torch.nn.functional.scaled_dot_product_attention(
        folded, key, value, dropout_p=dropout, scale=scaling, is_causal=False
    )
    return out.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None


def register() -> str:
    """Register ``studyhall_sdpa`` with transformers (attention and its ``sdpa`` masks); idempotent."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

        AttentionInterface.register(NAME, decode_sdpa_forward)
        ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
        _registered = True
    return NAME


def use_cpu_attention(model: Any) -> bool:
    """Switch a CPU model that uses ``sdpa`` to ``studyhall_sdpa``. Returns whether it switched."""
    try:
        device = next(model.parameters()).device
    except StopIteration:
        return False
    if device.type != "cpu" or getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    model.set_attn_implementation(register())
    return model.config._attn_implementation == NAME
