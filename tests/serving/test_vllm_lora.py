"""Adapter checks and the identity adapter (no vLLM needed: safetensors headers and numpy)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from studyhall.errors import InputError
from studyhall.serving.vllm_lora import base_linear_shapes, check_adapter, identity_adapter

from ..vllm.helpers import fake_adapter


@pytest.fixture(scope="module")
def smol_dir():
    from studyhall.config import load_settings
    from studyhall.serving.loader import resolve_path

    return resolve_path("packaged:smollm2-135m-instruct", load_settings())


@pytest.fixture(scope="module")
def qwen_dir():
    from studyhall.config import load_settings
    from studyhall.serving.loader import resolve_path

    return resolve_path("packaged:qwen2.5-coder-0.5b-instruct", load_settings())


def test_base_shapes_come_from_the_weights(smol_dir):
    shapes = base_linear_shapes(smol_dir)
    config = json.loads((__import__("pathlib").Path(smol_dir) / "config.json").read_text())
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    assert shapes["layers.0.self_attn.q_proj"] == (hidden, hidden)
    assert shapes["layers.0.mlp.down_proj"] == (hidden, config["intermediate_size"])
    assert len([k for k in shapes if k.endswith("q_proj")]) == layers


def test_matching_adapter_passes(smol_dir, tmp_path):
    folder = fake_adapter(smol_dir, tmp_path / "ok", rank=8)
    info = check_adapter(folder, smol_dir, max_rank=16)
    assert info.rank == 8 and set(info.target_modules) == {"q_proj", "v_proj"}


def test_adapter_of_another_base_model_is_refused(smol_dir, qwen_dir, tmp_path):
    folder = fake_adapter(qwen_dir, tmp_path / "qwen")
    with pytest.raises(InputError, match="does not fit the base model") as err:
        check_adapter(folder, smol_dir, max_rank=16)
    assert "lora_A has shape [8, 896]" in str(err.value) and "in_features 576" in str(err.value)
    assert "trained on" in str(err.value)


def test_adapter_with_layers_the_base_lacks_is_refused(smol_dir, qwen_dir, tmp_path):
    folder = fake_adapter(smol_dir, tmp_path / "deep", targets=("q_proj",))
    from safetensors.numpy import save_file

    tensors = load_file(str(folder / "adapter_model.safetensors"))
    tensors["base_model.model.model.layers.99.self_attn.q_proj.lora_A.weight"] = np.zeros((8, 576), np.float32)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    with pytest.raises(InputError, match="layers.99.self_attn.q_proj, which the base model does not have"):
        check_adapter(folder, smol_dir, max_rank=16)


def test_bad_folders_and_ranks(smol_dir, tmp_path):
    with pytest.raises(InputError, match="not a folder"):
        check_adapter(tmp_path / "nope", smol_dir, 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a peft adapter"):
        check_adapter(tmp_path / "empty", smol_dir, 16)
    big = fake_adapter(smol_dir, tmp_path / "big", rank=32)
    with pytest.raises(InputError, match="max_lora_rank 16") as err:
        check_adapter(big, smol_dir, 16)
    assert "STUDYHALL_VLLM_MAX_LORA_RANK=32" in err.value.hint
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "adapter_config.json").write_text("{not json")
    (tmp_path / "broken" / "adapter_model.safetensors").write_bytes(b"\0" * 4)
    with pytest.raises(InputError, match="unreadable"):
        check_adapter(tmp_path / "broken", smol_dir, 16)


def test_identity_adapter_is_zero_over_every_linear_and_cached(smol_dir, tmp_path):
    folder = identity_adapter(smol_dir, tmp_path, rank=8)
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    shapes = base_linear_shapes(smol_dir)
    assert len(tensors) == 2 * len(shapes)
    assert all(not t.any() for t in tensors.values())
    info = check_adapter(folder, smol_dir, max_rank=8)  # and it fits its base model
    assert set(info.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    mtime = (folder / "adapter_model.safetensors").stat().st_mtime_ns
    assert identity_adapter(smol_dir, tmp_path, rank=8) == folder
    assert (folder / "adapter_model.safetensors").stat().st_mtime_ns == mtime
