"""A KV cache layer that grows in chunks instead of copying itself every decode step.

transformers' ``DynamicLayer`` appends each step's keys and values with ``torch.cat``, which
copies the whole cache of the batch: per step that is 2 x layers x batch x kv-heads x length x
head-dim values (for 8 rows of 300 tokens of the default model ~30 MB, ~10% of an 8-row decode
step here). ``GrowingLayer`` keeps the keys and values in buffers with spare room, writes each
step into place and hands attention a view. Everything that sets ``keys``/``values`` directly
(the engine's merges, row selection, trimming) replaces the buffer; the next step grows it
again, so those rarer operations cost what they did before.
"""

from __future__ import annotations

from typing import Any

from transformers.cache_utils import DynamicLayer

_MIN_ROOM = 128  # spare positions added on each growth (at least; half the length above that)


class _Buffer:
    """One growable tensor [batch, heads, capacity, dim] and its used length."""

    __slots__ = ("data", "length")

    def __init__(self, tensor: Any) -> None:
        self.data = tensor
        self.length = tensor.shape[-2] if tensor is not None and tensor.dim() == 4 else 0

    def view(self) -> Any:
        if self.data is None or self.data.dim() != 4 or self.length == self.data.shape[-2]:
            return self.data
        return self.data[:, :, : self.length]

    def append(self, new: Any) -> Any:
        import torch

        data = self.data
        if data is None or data.dim() != 4 or not self.length:  # empty: start from these
            data, self.length = None, 0
        elif (data.shape[:2] != new.shape[:2] or data.shape[-1] != new.shape[-1]
              or data.dtype != new.dtype or data.device != new.device):
            # Another batch, head count or head size is what torch.cat in DynamicLayer refuses; another
            # dtype or device would convert silently. Fail rather than drop the cached positions.
            raise ValueError(
                f"KV cache update {tuple(new.shape)} {new.dtype} on {new.device} does not fit the cached "
                f"{tuple(data.shape[:2])}x{self.length}x{data.shape[-1]} {data.dtype} on {data.device}"
            )
        need = self.length + new.shape[-2]
        if data is None or need > data.shape[-2]:
            old = data[:, :, : self.length] if data is not None else None
            grown = torch.empty(
                (*new.shape[:2], need + max(_MIN_ROOM, need // 2), new.shape[-1]), dtype=new.dtype, device=new.device
            )
            if old is not None:
                grown[:, :, : self.length].copy_(old)
            self.data = data = grown
        data[:, :, self.length : need].copy_(new)
        self.length = need
        return data[:, :, :need]


class GrowingLayer(DynamicLayer):
    """A ``DynamicLayer`` whose ``update`` writes into spare room (see the module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        self._k = _Buffer(None)
        self._v = _Buffer(None)
        super().__init__(**kwargs)

    @property  # type: ignore[override]
    def keys(self) -> Any:
        return self._k.view()

    @keys.setter
    def keys(self, tensor: Any) -> None:
        self._k = _Buffer(tensor)

    @property  # type: ignore[override]
    def values(self) -> Any:
        return self._v.view()

    @values.setter
    def values(self, tensor: Any) -> None:
        self._v = _Buffer(tensor)

    def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        return self._k.append(key_states), self._v.append(value_states)


def new_cache(config: Any) -> Any:
    """A ``DynamicCache`` for ``config`` whose plain full-attention layers grow in place (sliding
    window and other special layers stay as transformers made them)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=config)
    cache.layers = [GrowingLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache
