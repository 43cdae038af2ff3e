"""Faster LoRA ops for vLLM on CPU: one matmul per adapter in the batch, not one gathered
weight copy per token.

vLLM's CPU punica ops (``vllm.lora.ops.torch_ops``) index the stacked LoRA weights with the
per-token adapter index (``weights[indices]``: a [tokens, out, rank] copy for every layer and
projection) and then ``einsum`` over it. A batch has a handful of adapters at most, so the
same product is a few dense matmuls over the tokens of each adapter. Profiling the loop's
collect step (32 graph runs, LoRA on) put ~60% of the engine's time in those ops.

``install()`` swaps the six functions in vLLM's modules for the grouped ones below. They keep
vLLM's semantics exactly, including its dtype casts and its negative index (``-1`` picks the
last slot, as Python indexing does in the original). Tensors: ``inputs`` [tokens, in],
``weights`` [loras, (1,) out, in], ``indices`` [tokens].
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

_installed = False


def grouped_matmul(inputs: Any, weights: Any, indices: Any, dtype: Any) -> Any:
    """``out[t] = weights[indices[t]] @ inputs[t]`` computed per distinct adapter."""
    import torch

    if weights.dim() == 4:
        weights = weights.squeeze(1)
    inputs = inputs.to(dtype=dtype)
    if indices.numel() == 0:
        return inputs.new_zeros((0, weights.shape[1]))
    n = weights.shape[0]
    slots = torch.remainder(indices, n)  # -1 -> the last slot, as weights[indices] would pick
    first = int(slots[0])
    if bool((slots == first).all()):
        return inputs @ weights[first].to(dtype=dtype).t()
    out = inputs.new_empty((inputs.shape[0], weights.shape[1]))
    for slot in torch.unique(slots).tolist():
        rows = (slots == slot).nonzero().squeeze(1)
        out[rows] = inputs[rows] @ weights[slot].to(dtype=dtype).t()
    return out


def bgmv_shrink(inputs: Any, lora_b_weights: Any, output_tensor: Any, lora_indices_tensor: Any,
                scaling: float = 1.0) -> None:
    outputs = grouped_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs[:]


def bgmv_expand(inputs: Any, lora_b_weights: Any, output_tensor: Any, lora_indices_tensor: Any,
                add_inputs: bool = True) -> None:
    outputs = grouped_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    limit = output_tensor.shape[0]
    if outputs.shape[0] == 1 and output_tensor.shape[0] != 1:
        limit = 1
    common_len = min(outputs.shape[1], output_tensor.shape[1])
    if add_inputs:
        output_tensor[:, :common_len] += outputs[:limit, :common_len]
    else:
        output_tensor[:, :common_len] = outputs[:limit, :common_len]


def bgmv_expand_slice(inputs: Any, lora_b_weights: Any, output_tensor: Any, lora_indices_tensor: Any,
                      slice_offset: int, slice_size: int, add_inputs: bool = True) -> None:
    outputs = grouped_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if add_inputs:
        output_tensor[:, slice_offset: slice_offset + slice_size] += outputs[:]
    else:
        output_tensor[:, slice_offset: slice_offset + slice_size] = outputs[:]


def _explode(lora_indices_tensor: Any, seq_len_tensor: Any) -> Any:
    import torch

    return torch.repeat_interleave(lora_indices_tensor, seq_len_tensor)


def sgmv_shrink(inputs: Any, lora_a_weights: Any, output_tensor: Any, b_seq_start_loc: Any,
                seq_len_tensor: Any, lora_indices_tensor: Any, batches: int, max_seq_length: int,
                token_nums: int, scaling: float) -> None:
    bgmv_shrink(inputs, lora_a_weights, output_tensor, _explode(lora_indices_tensor, seq_len_tensor), scaling)


def sgmv_expand(inputs: Any, lora_b_weights: Any, output_tensor: Any, b_seq_start_loc: Any,
                seq_len_tensor: Any, lora_indices_tensor: Any, batches: int, max_seq_length: int,
                token_nums: int, add_inputs: bool = False) -> None:
    bgmv_expand(inputs, lora_b_weights, output_tensor, _explode(lora_indices_tensor, seq_len_tensor), add_inputs)


def sgmv_expand_slice(inputs: Any, lora_b_weights: Any, output_tensor: Any, b_seq_start_loc: Any,
                      seq_len_tensor: Any, lora_indices_tensor: Any, batches: int, max_seq_length: int,
                      token_nums: int, slice_offset: int, slice_size: int, add_inputs: bool = False) -> None:
    bgmv_expand_slice(inputs, lora_b_weights, output_tensor, _explode(lora_indices_tensor, seq_len_tensor),
                      slice_offset, slice_size, add_inputs)


OPS = {
    "bgmv_shrink": bgmv_shrink, "bgmv_expand": bgmv_expand, "bgmv_expand_slice": bgmv_expand_slice,
    "sgmv_shrink": sgmv_shrink, "sgmv_expand": sgmv_expand, "sgmv_expand_slice": sgmv_expand_slice,
}


def install() -> bool:
    """Put the grouped ops into vLLM's CPU punica wrapper (idempotent). False when this vLLM
    has no such modules (a GPU build, or a layout we do not know): nothing is changed."""
    global _installed
    if _installed:
        return True
    import importlib

    try:
        modules = [importlib.import_module(name) for name in (
            "vllm.lora.ops.torch_ops.lora_ops", "vllm.lora.ops.torch_ops", "vllm.lora.punica_wrapper.punica_cpu",
        )]
    except ImportError:
        return False
    if not all(hasattr(modules[0], name) for name in OPS):
        log.warning("vLLM's CPU LoRA ops have changed; keeping vLLM's own")
        return False
    for module in modules:
        for name, fn in OPS.items():
            if hasattr(module, name):
                setattr(module, name, fn)
    _installed = True
    return True
