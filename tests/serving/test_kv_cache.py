"""GrowingLayer: in-place KV cache growth gives the same keys, values and logits as DynamicLayer."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from transformers import DynamicCache  # noqa: E402
from transformers.cache_utils import DynamicLayer  # noqa: E402

from studyhall.serving.kv_cache import GrowingLayer, new_cache  # noqa: E402


def kv(batch: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 2, length, 4, generator=g), torch.randn(batch, 2, length, 4, generator=g)


def test_appends_match_dynamic_layer_across_growth():
    ours, theirs = GrowingLayer(), DynamicLayer()
    for step, length in enumerate([5] + [1] * 300):  # grows past the first spare room several times
        k, v = kv(3, length, step)
        got, want = ours.update(k, v), theirs.update(k, v)
        torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
        torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)
    assert ours.get_seq_length() == theirs.get_seq_length() == 305
    assert ours._k.data.shape[-2] > 305  # spare room: the next step is written in place
    data = ours._k.data
    ours.update(*kv(3, 1, 999))
    assert ours._k.data is data


def test_direct_assignment_row_selection_and_trimming():
    layer = GrowingLayer()
    layer.update(*kv(4, 6, 0))
    keys = layer.keys.clone()
    layer.batch_select_indices(torch.tensor([0, 2]))
    torch.testing.assert_close(layer.keys, keys[[0, 2]])
    layer.keys, layer.values = layer.keys[:, :, 2:], layer.values[:, :, 2:]  # the engine's trim
    assert layer.get_seq_length() == 4
    k, v = kv(2, 1, 5)
    out_k, out_v = layer.update(k, v)
    torch.testing.assert_close(out_k, torch.cat([keys[[0, 2]][:, :, 2:], k], -2))
    assert out_v.shape == (2, 2, 5, 4)
    # the engine's merge: a new batch size
    layer.keys, layer.values = torch.cat([layer.keys, layer.keys], 0), torch.cat([layer.values, layer.values], 0)
    assert layer.update(*kv(4, 1, 6))[0].shape == (4, 2, 6, 4)
    # an update that does not fit the cached rows fails, as torch.cat would, and keeps the cache
    before = layer.keys.clone()
    with pytest.raises(ValueError, match="does not fit"):
        layer.update(*kv(3, 1, 7))
    with pytest.raises(ValueError, match="does not fit"):
        layer.update(*(t.bfloat16() for t in kv(4, 1, 7)))
    torch.testing.assert_close(layer.keys, before)


def test_new_cache_replaces_only_plain_layers():
    transformers = pytest.importorskip("transformers")
    config = transformers.Qwen2Config(num_hidden_layers=3, hidden_size=32, num_attention_heads=4,
                                      num_key_value_heads=2, intermediate_size=64, vocab_size=50)
    assert all(type(layer) is GrowingLayer for layer in new_cache(config).layers)
    assert isinstance(new_cache(config), DynamicCache)
