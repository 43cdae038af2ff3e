"""vLLM generation for trl's GRPO trainer (trl 1.16): the GRPOConfig fields, and the command that
starts the generation server for server mode.

The training config calls ``grpo_vllm_kwargs(...)`` and passes the result into ``GRPOConfig``:

- ``colocate``: vLLM runs inside the trainer's process and shares its GPU (memory split by
  ``gpu_memory_utilization``); nothing else to start. One GPU is enough.
- ``server``: a separate ``trl vllm-serve`` process (on other GPUs) generates, and the trainer
  pushes updated weights to it after each step; start it with ``trl_vllm_serve_command(...)``.
  Plain ``vllm serve`` is not enough: trl's weight-sync endpoints live in ``trl vllm-serve``.

Both need a CUDA machine with ``pip install '.[gpu]'`` (vllm within trl's supported range,
0.22-0.31). On CPU, GRPO generates with transformers (``use_vllm=False``).
"""

from __future__ import annotations

from typing import Any, Literal

from studyhall.errors import InputError

Mode = Literal["server", "colocate"]


def grpo_vllm_kwargs(
    mode: Mode | None,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    base_url: str | None = None,
    server_timeout: float = 240.0,
    group_port: int = 51216,
    gpu_memory_utilization: float = 0.3,
    tensor_parallel_size: int = 1,
    max_model_len: int | None = None,
    enable_sleep_mode: bool = False,
) -> dict[str, Any]:
    """GRPOConfig keyword arguments for vLLM generation; ``mode=None`` turns vLLM off.

    Server fields go in only for server mode and colocate fields only for colocate mode, so
    the dict says exactly what the trainer will use.
    """
    if mode is None:
        return {"use_vllm": False}
    if mode not in ("server", "colocate"):
        raise InputError(f"unknown vLLM mode {mode!r} for GRPO", hint="use 'server', 'colocate' or None")
    kwargs: dict[str, Any] = {"use_vllm": True, "vllm_mode": mode}
    if mode == "server":
        if not 0 < port < 65536:
            raise InputError(f"bad vLLM server port {port}")
        kwargs |= {"vllm_server_timeout": server_timeout, "vllm_group_port": group_port}
        if base_url:
            kwargs["vllm_server_base_url"] = base_url.rstrip("/")
        else:
            kwargs |= {"vllm_server_host": host, "vllm_server_port": port}
    else:
        if not 0 < gpu_memory_utilization <= 1:
            raise InputError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
        kwargs |= {
            "vllm_gpu_memory_utilization": gpu_memory_utilization,
            "vllm_tensor_parallel_size": tensor_parallel_size,
            "vllm_enable_sleep_mode": enable_sleep_mode,
        }
        if max_model_len:
            kwargs["vllm_max_model_length"] = max_model_len
    return kwargs


def trl_vllm_serve_command(
    model_path: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    tensor_parallel_size: int = 1,
    gpu_memory_utilization: float = 0.9,
    max_model_len: int | None = None,
    dtype: str = "auto",
) -> list[str]:
    """``trl vllm-serve`` for GRPO server mode (run it on the generation GPUs, e.g. with
    CUDA_VISIBLE_DEVICES set, before training starts)."""
    cmd = [
        "trl", "vllm-serve", "--model", model_path, "--host", host, "--port", str(port),
        "--tensor_parallel_size", str(tensor_parallel_size),
        "--gpu_memory_utilization", str(gpu_memory_utilization), "--dtype", dtype,
    ]
    if max_model_len:
        cmd += ["--max_model_len", str(max_model_len)]
    return cmd
