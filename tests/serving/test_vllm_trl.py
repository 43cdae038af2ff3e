"""grpo_vllm_kwargs / trl_vllm_serve_command against trl 1.16's own GRPOConfig and vllm-serve."""

from __future__ import annotations

import dataclasses

import pytest

from studyhall.errors import InputError
from studyhall.serving.vllm_trl import grpo_vllm_kwargs, trl_vllm_serve_command

trl = pytest.importorskip("trl", reason="trl comes with the train extra")


def _config(**kwargs):
    from trl import GRPOConfig

    return GRPOConfig(output_dir="/tmp/studyhall-grpo-test", report_to="none", use_cpu=True, bf16=False, **kwargs)


def test_every_key_is_a_grpo_config_field():
    from trl import GRPOConfig

    fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    for kwargs in (grpo_vllm_kwargs("server", "10.0.0.5", 8001), grpo_vllm_kwargs("colocate", max_model_len=2048),
                   grpo_vllm_kwargs("server", base_url="http://gen:8000/"), grpo_vllm_kwargs(None)):
        assert set(kwargs) <= fields, set(kwargs) - fields


def test_server_mode_reaches_the_config():
    cfg = _config(**grpo_vllm_kwargs("server", "127.0.0.1", 8123))
    assert cfg.use_vllm and cfg.vllm_mode == "server"
    assert (cfg.vllm_server_host, cfg.vllm_server_port) == ("127.0.0.1", 8123)
    via_url = _config(**grpo_vllm_kwargs("server", base_url="http://gen:9000/"))
    assert via_url.vllm_server_base_url == "http://gen:9000"


def test_colocate_mode_reaches_the_config():
    cfg = _config(**grpo_vllm_kwargs("colocate", gpu_memory_utilization=0.4, tensor_parallel_size=2, max_model_len=1024))
    assert cfg.use_vllm and cfg.vllm_mode == "colocate"
    assert cfg.vllm_gpu_memory_utilization == 0.4 and cfg.vllm_tensor_parallel_size == 2
    assert cfg.vllm_max_model_length == 1024


def test_defaults_follow_trl():
    """Our defaults for the server handshake are trl's (a trl upgrade that changes them fails here)."""
    from trl import GRPOConfig

    defaults = {f.name: f.default for f in dataclasses.fields(GRPOConfig)}
    kwargs = grpo_vllm_kwargs("server")
    assert kwargs["vllm_server_timeout"] == defaults["vllm_server_timeout"]
    assert kwargs["vllm_group_port"] == defaults["vllm_group_port"]
    assert grpo_vllm_kwargs("colocate")["vllm_gpu_memory_utilization"] == defaults["vllm_gpu_memory_utilization"]
    assert _config(**grpo_vllm_kwargs(None)).use_vllm is False


def test_bad_values_are_refused():
    with pytest.raises(InputError, match="unknown vLLM mode"):
        grpo_vllm_kwargs("remote")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="port"):
        grpo_vllm_kwargs("server", port=0)
    with pytest.raises(InputError, match="gpu_memory_utilization"):
        grpo_vllm_kwargs("colocate", gpu_memory_utilization=1.5)


def test_serve_command_flags_are_trl_vllm_serve_arguments():
    from trl.scripts.vllm_serve import ScriptArguments

    fields = {f.name for f in dataclasses.fields(ScriptArguments)}
    cmd = trl_vllm_serve_command("/models/qwen", port=8001, max_model_len=2048)
    assert cmd[:2] == ["trl", "vllm-serve"]
    flags = [a[2:] for a in cmd if a.startswith("--")]
    assert set(flags) <= fields, set(flags) - fields
    assert cmd[cmd.index("--model") + 1] == "/models/qwen" and cmd[cmd.index("--port") + 1] == "8001"
