"""The embedded CPU default: a LangChain chat model over a transformers model and BatchEngine.

Every instance pointing at the same weights shares one engine (one copy of the model, one
batch), so many graph runs at once are generated together. Sampling options arrive through
``.bind()`` (n, temperature, top_p, top_k, max_tokens, stop, seed, adapter) or the constructor.

``adapter``: a LoRA adapter folder or a registered adapter NAME (``settings.home/adapters``);
``"base"`` (or ``"__base__"``) asks for the base model when a default adapter is set. Calls
with different adapters share one batch (see ``engine``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr

from studyhall.serving.engine import BatchEngine, Completion, Request, SamplingParams
from studyhall.serving.messages import to_chat_dicts, usage
from studyhall.torch_threads import on_own_thread

log = logging.getLogger(__name__)

_SAMPLING_KEYS = {"n", "temperature", "top_p", "top_k", "max_tokens", "max_new_tokens", "seed", "stop", "ignore_eos"}
_BASE_NAMES = {"", "base", "__base__", "none"}
_IGNORED_KEYS = {"stream"}


def cpu_supports_bf16() -> bool:
    """avx512-bf16 or AMX: bf16 matmuls run natively (about 2x fp32 on these CPUs)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(name: str) -> Any:
    import torch

    if name == "bfloat16":
        return torch.bfloat16
    if name == "float32":
        return torch.float32
    if torch.cuda.is_available() or cpu_supports_bf16():
        return torch.bfloat16
    return torch.float32


_engines: dict[tuple, BatchEngine] = {}  # (weights path, dtype, prepack) -> engine
_engines_lock = threading.Lock()


def get_engine(
    path: str,
    *,
    dtype: str = "auto",
    threads: int | None = None,
    max_batch_size: int = 16,
    batch_wait_ms: float = 50.0,
    prepack: bool = True,
) -> BatchEngine:
    """One engine per (weights, dtype, prepack); loading happens once per process. ``prepack``: run
    the linear layers on oneDNN-packed weights on CPU (cpu_linear; twice the weight memory)."""
    import torch

    torch_dtype = resolve_dtype(dtype)
    key = (str(path), str(torch_dtype), prepack)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is not None:
            return engine
        count = threads or os.cpu_count() or 1
        torch.set_num_threads(count)

        def load() -> tuple[Any, Any, int]:
            model, tokenizer = load_model(path, torch_dtype)
            packed = 0
            if prepack:
                from studyhall.serving.cpu_linear import pack_linears

                packed = pack_linears(model)
            return model, tokenizer, packed

        # On a short-lived thread: an OpenMP pool left on the caller's thread would slow every
        # decode step of the engine (see studyhall.torch_threads).
        model, tokenizer, packed = on_own_thread(load, threads=count, name="studyhall-load")
        engine = BatchEngine(
            model, tokenizer, max_batch_size=max_batch_size, batch_wait_ms=batch_wait_ms, threads=threads,
            model_path=str(path),
        )
        engine.packed_layers = packed
        _engines[key] = engine
        return engine


def loaded_engines() -> list[BatchEngine]:
    """The engines this process has loaded (one per weights and dtype)."""
    with _engines_lock:
        return list(_engines.values())


def release_engines(engines: Iterable[BatchEngine] | None = None) -> int:
    """Stop and forget loaded engines (default: all), so their weights can be freed, e.g.
    before a trainer loads its own copy. The next call loads again. Chat models that hold
    a released engine must not be used any more. Returns how many were stopped."""
    chosen = None if engines is None else {id(e) for e in engines}
    with _engines_lock:
        stopped = [e for e in _engines.values() if chosen is None or id(e) in chosen]
        for key in [k for k, e in _engines.items() if chosen is None or id(e) in chosen]:
            del _engines[key]
    for engine in stopped:
        engine.close()
    return len(stopped)


def load_model(path: str, torch_dtype: Any) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, attn_implementation="sdpa")
    model.eval()
    if torch.cuda.is_available():
        model.to("cuda")
    else:
        from studyhall.serving.cpu_attention import use_cpu_attention

        use_cpu_attention(model)  # decode steps without torch's slow CPU grouped-query kernel
    return model, tokenizer


class TransformersChatModel(BaseChatModel):
    """A chat model backed by a local HF folder, batched across concurrent callers."""

    model_config = ConfigDict(protected_namespaces=())

    spec: str = Field(description="The model spec this came from, for records.")
    path: str = Field(description="Local HF folder with weights and tokenizer.")
    dtype: str = "auto"
    threads: int | None = None
    max_batch_size: int = 16
    batch_wait_ms: float = 50.0
    prepack: bool = Field(True, description="CPU: oneDNN-packed linear weights (see cpu_linear).")
    max_tokens: int = 384
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    n: int = 1
    seed: int | None = None
    adapter: str | None = Field(None, description="Default LoRA adapter: a folder or a registered name.")
    adapter_dir: str | None = Field(None, description="The adapter registry (settings.home/adapters).")

    _engine: BatchEngine | None = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "studyhall-transformers"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"spec": self.spec, "dtype": self.dtype, "adapter": self.adapter}

    @property
    def engine(self) -> BatchEngine:
        if self._engine is None:
            self._engine = get_engine(
                self.path,
                dtype=self.dtype,
                threads=self.threads,
                max_batch_size=self.max_batch_size,
                batch_wait_ms=self.batch_wait_ms,
                prepack=self.prepack,
            )
        return self._engine

    def warm_up(self) -> None:
        """Load the weights now (e.g. behind a spinner) instead of on the first call."""
        _ = self.engine

    # ------------------------------------------------------------------ helpers
    def resolve_adapter(self, name_or_path: str | None) -> str | None:
        """An adapter folder (absolute path) for a name or path; None for the base model."""
        if name_or_path is None or str(name_or_path).strip().lower() in _BASE_NAMES:
            return None
        from studyhall.training.adapters import resolve_adapter

        return str(resolve_adapter(name_or_path, registry=self.adapter_dir))

    def _adapter_path(self, kwargs: dict[str, Any]) -> str | None:
        return self.resolve_adapter(kwargs.get("adapter", self.adapter))

    def _request(self, messages: list[BaseMessage], params: SamplingParams, kwargs: dict[str, Any], **kw: Any) -> Request:
        return Request(self._prompt_ids(messages), params, adapter=self._adapter_path(kwargs), **kw)

    def _params(self, stop: list[str] | None, kwargs: dict[str, Any], stream: bool = False) -> SamplingParams:
        unknown = set(kwargs) - _SAMPLING_KEYS - _IGNORED_KEYS - {"adapter"}
        if unknown:
            raise TypeError(f"unsupported generation options: {sorted(unknown)}")
        max_tokens = kwargs.get("max_tokens", kwargs.get("max_new_tokens", self.max_tokens))
        stops = tuple(stop or ()) + tuple(kwargs.get("stop") or ())
        n = 1 if stream else int(kwargs.get("n", self.n))
        if n < 1:
            raise ValueError("n must be >= 1")
        return SamplingParams(
            max_new_tokens=int(max_tokens),
            temperature=float(kwargs.get("temperature", self.temperature)),
            top_p=float(kwargs.get("top_p", self.top_p)),
            top_k=int(kwargs.get("top_k", self.top_k)),
            stop=stops,
            seed=kwargs.get("seed", self.seed),
            n=n,
            ignore_eos=bool(kwargs.get("ignore_eos", False)),
        )

    def _prompt_ids(self, messages: list[BaseMessage]) -> list[int]:
        tok = self.engine.tokenizer
        text = tok.apply_chat_template(to_chat_dicts(messages), add_generation_prompt=True, tokenize=False)
        return tok(text, add_special_tokens=False)["input_ids"]

    def _result(self, completions: list[Completion], adapter: str | None = None) -> ChatResult:
        gens = []
        for c in completions:
            meta = {"finish_reason": c.finish_reason, "model_name": self.spec, "seconds": c.seconds,
                    "adapter": adapter}
            msg = AIMessage(
                content=c.text,
                usage_metadata=usage(c.prompt_tokens, c.completion_tokens),
                response_metadata=meta,
            )
            gens.append(ChatGeneration(message=msg, generation_info={"finish_reason": c.finish_reason}))
        prompt = completions[0].prompt_tokens if completions else 0
        completion = sum(c.completion_tokens for c in completions)
        return ChatResult(
            generations=gens,
            llm_output={"token_usage": usage(prompt, completion), "model_name": self.spec},
        )

    # ------------------------------------------------------------------ LangChain hooks
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        req = self.engine.submit(self._request(messages, self._params(stop, kwargs), kwargs))
        try:
            return self._result(req.future.result(), req.adapter)
        except BaseException:
            req.cancel()
            raise

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        req = self.engine.submit(self._request(messages, self._params(stop, kwargs), kwargs))
        try:
            return self._result(await asyncio.wrap_future(req.future), req.adapter)
        except BaseException:  # cancelled (Ctrl-C, timeout): free the batch slot
            req.cancel()
            raise

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        chunks: queue.Queue[str] = queue.Queue()
        req = self._request(messages, self._params(stop, kwargs, stream=True), kwargs,
                            on_text=lambda _i, text: chunks.put(text))
        self.engine.submit(req)
        try:
            while True:
                try:
                    text = chunks.get(timeout=0.05)
                except queue.Empty:
                    if req.future.done() and chunks.empty():
                        break
                    continue
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
                if run_manager:
                    run_manager.on_llm_new_token(text, chunk=chunk)
                yield chunk
            yield self._final_chunk(req.future.result()[0])
        finally:
            req.cancel()

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[str | None] = asyncio.Queue()
        req = self._request(messages, self._params(stop, kwargs, stream=True), kwargs,
                            on_text=lambda _i, text: loop.call_soon_threadsafe(chunks.put_nowait, text))
        req.future.add_done_callback(lambda _f: loop.call_soon_threadsafe(chunks.put_nowait, None))
        self.engine.submit(req)
        try:
            while (text := await chunks.get()) is not None:
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
                if run_manager:
                    await run_manager.on_llm_new_token(text, chunk=chunk)
                yield chunk
            yield self._final_chunk(req.future.result()[0])
        finally:
            req.cancel()

    def _final_chunk(self, c: Completion) -> ChatGenerationChunk:
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=usage(c.prompt_tokens, c.completion_tokens),
                response_metadata={"finish_reason": c.finish_reason, "model_name": self.spec},
            ),
            generation_info={"finish_reason": c.finish_reason},
        )
