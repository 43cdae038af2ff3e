"""Turn a model spec string into a LangChain chat model."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel

from studyhall.config import Settings, load_settings
from studyhall.errors import ModelSpecError, StudyhallError
from studyhall.serving.specs import parse_spec, weights_spec


def resolve_path(spec: str, settings: Settings | None = None, progress: Any = None) -> str:
    """Local weights folder of a packaged, hf or vllm spec (packaged ones are prepared on
    first use)."""
    settings = settings or load_settings()
    try:
        weights = weights_spec(spec)
    except ModelSpecError as exc:
        raise StudyhallError(f"{spec} has no local weights", hint=exc.hint) from exc
    if weights.kind == "packaged":
        from studyhall.serving.packaged import prepare

        return str(prepare(weights.target, settings.cache_dir, progress=progress))
    return weights.target


def load_chat_model(spec: str | None = None, settings: Settings | None = None, **options: Any) -> BaseChatModel:
    """A chat model for ``spec`` (default: settings.model). Options override settings.

    ``adapter`` (default: settings.adapter): a LoRA adapter folder or registered name that
    every call uses unless it binds another ``adapter``. An OpenAI-compatible server (vLLM)
    serves adapters under their own model names, so there the name replaces the model.
    """
    settings = settings or load_settings()
    spec = spec or settings.model
    parsed = parse_spec(spec)
    adapter = options.pop("adapter", settings.adapter)
    if parsed.kind in ("packaged", "hf"):
        from studyhall.serving.transformers_backend import TransformersChatModel
        from studyhall.training.adapters import check_adapter_base, registry_dir, resolve_adapter

        path = resolve_path(spec, settings)
        adapter_path = None
        if adapter and str(adapter).lower() not in ("base", "__base__", "none"):
            adapter_path = str(resolve_adapter(adapter, settings))
            check_adapter_base(adapter_path, path, str(parsed))
        return TransformersChatModel(
            spec=str(parsed),
            path=path,
            adapter=adapter_path,
            adapter_dir=str(registry_dir(settings)),
            dtype=options.pop("dtype", settings.dtype),
            threads=options.pop("threads", settings.threads),
            max_batch_size=options.pop("max_batch_size", settings.max_batch_size),
            batch_wait_ms=options.pop("batch_wait_ms", settings.batch_wait_ms),
            prepack=options.pop("prepack", settings.prepack_weights),
            max_tokens=options.pop("max_tokens", settings.max_new_tokens),
            **options,
        )
    if parsed.kind == "openai":
        from studyhall.serving.openai_backend import OpenAIChatModel

        return OpenAIChatModel(
            base_url=parsed.target,
            model=str(adapter) if adapter else parsed.model or "",
            max_tokens=options.pop("max_tokens", settings.max_new_tokens),
            timeout=options.pop("timeout", settings.request_timeout),
            **options,
        )
    if parsed.kind == "fake":
        from studyhall.serving.fake import ScriptedChatModel

        return ScriptedChatModel.from_file(parsed.target)
    if parsed.kind == "vllm":
        from studyhall.serving.vllm_backend import load_vllm_chat_model

        return load_vllm_chat_model(spec, settings, **options)
    raise StudyhallError(f"no backend for {spec}")  # pragma: no cover
