"""A continuous-batching generation engine over a transformers causal LM.

Concurrent requests (from many graph runs at once) are gathered for a few milliseconds,
prefilled together (left-padded, identical prompts prefilled once), then decoded one token
per step for the whole batch. Requests that arrive while a batch is decoding join it at the
next step (their KV cache is left-padded to the batch's length), and finished rows leave it,
so the batch stays full. Each row samples with its own temperature, top-p/top-k, seed, stop
strings and token budget, and streams its text as it goes.

Prompts that start like a recent prompt (the same agent's system prompt before each question)
reuse the keys and values of the shared start (a small LRU prefix cache), and the KV cache
grows in place (kv_cache.GrowingLayer) instead of being copied every step.

LoRA adapters: a request may name an adapter folder. The engine loads it with peft the
first time (in its own thread, between forward passes), and serves mixed batches — base
rows and rows of different adapters in one forward pass, through peft's mixed-batch
inference (``adapter_names=[...]`` per row, ``"__base__"`` for base rows). When an adapter
folder's files are replaced (a newly promoted champion), the next request loads the new
version under a new name; rows still decoding with the old one finish with it, and the old
one is dropped when no row uses it. ``reload_adapter(path)`` forces a reload.

Batching lives here and nowhere else; the LangChain chat model in ``transformers_backend``
is a thin adapter over :class:`BatchEngine`.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

TextCallback = Callable[[int, str], None]  # (sample index, new text)


@dataclass
class SamplingParams:
    """Per-request decoding options; temperature 0 means greedy."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int = 1
    ignore_eos: bool = False  # for benchmarks: always generate max_new_tokens


@dataclass
class Completion:
    """One finished sample."""

    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" | "length" | "cancelled"
    prompt_tokens: int
    completion_tokens: int
    seconds: float


@dataclass
class Request:
    prompt_ids: list[int]
    params: SamplingParams
    adapter: str | None = None  # an adapter folder (path); None = the base model
    on_text: TextCallback | None = None
    future: Future = field(default_factory=Future)
    submitted: float = field(default_factory=time.perf_counter)
    cancelled: threading.Event = field(default_factory=threading.Event)
    results: list[Completion | None] = field(default_factory=list)
    loaded_as: str | None = field(default=None, repr=False)  # the engine's name for its adapter version

    def cancel(self) -> None:
        """Stop generating for this request; its future resolves with what it has."""
        self.cancelled.set()


@dataclass
class _Control:
    """Work for the engine thread between forward passes (e.g. reloading an adapter)."""

    fn: Callable[[], Any]
    future: Future = field(default_factory=Future)


@dataclass
class _Adapter:
    name: str  # the peft adapter name
    path: str
    fingerprint: str


BASE = "__base__"  # peft's name for "no adapter" in a mixed batch


class _Row:
    """One sequence being decoded: a sample of a request."""

    __slots__ = ("request", "index", "ids", "emitted", "generator", "stop_holdback", "text", "adapter")

    def __init__(self, request: Request, index: int, adapter: str = BASE) -> None:
        import torch

        self.request = request
        self.index = index
        self.adapter = adapter
        self.ids: list[int] = []
        self.emitted = 0
        self.text = ""
        p = request.params
        self.generator = None
        if p.temperature > 0:
            self.generator = torch.Generator()
            seed = p.seed + index if p.seed is not None else int.from_bytes(os.urandom(6), "little")
            self.generator.manual_seed(seed)
        self.stop_holdback = max((len(s) for s in p.stop), default=1) - 1


def _prompt_key(req: Request) -> tuple[str, tuple[int, ...]]:
    """Requests with the same key share one prefill: same adapter, same prompt tokens."""
    return (req.loaded_as or BASE, tuple(req.prompt_ids))


def _stop_position(text: str, stops: tuple[str, ...]) -> int:
    """Index of the earliest stop string in text, or -1."""
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(found) if found else -1


class BatchEngine:
    """Owns one model and a worker thread that batches every request sent to it."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_batch_size: int = 16,
        batch_wait_ms: float = 50.0,
        context_length: int | None = None,
        threads: int | None = None,
        model_path: str | None = None,
        prefill_each: bool = True,
    ) -> None:
        self.model = model  # becomes a peft PeftModel around base_model once an adapter loads
        self.base_model = model
        self.model_path = str(model_path or getattr(model, "name_or_path", "") or "")
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.batch_wait = batch_wait_ms / 1000.0
        self.context_length = context_length or int(
            getattr(model.config, "max_position_embeddings", 0) or 4096
        )
        self.eos_ids = self._eos_ids()
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        self.device = next(model.parameters()).device
        self._queue: queue.Queue[Request | None] = queue.Queue()
        self._rows: list[_Row] = []
        self._cache: Any = None
        self._mask: Any = None  # [B, T] 1 = real token
        self._next_pos: Any = None  # [B]
        self._last: Any = None  # [B]
        self._stopped = False
        self.threads = threads
        self.packed_layers = 0  # linear layers on oneDNN-packed weights (set by the loader)
        self.stats: dict[str, float] = {
            "steps": 0, "prefills": 0, "admissions": 0, "tokens": 0, "max_rows": 0,
            "prefill_tokens": 0, "prefill_seconds": 0.0, "decode_seconds": 0.0, "decode_row_steps": 0,
            "prefix_hits": 0, "prefix_tokens": 0,
        }
        self._mergeable = True
        # Prefill distinct prompts one at a time and merge their caches into the batch, rather
        # than as one left-padded batch: no padding compute and no padded attention mask
        # (measured by bench/serving.py). Caches that cannot be merged batch statically.
        self.prefill_each = prefill_each
        # Prompts that start alike (one agent's system prompt before each question) reuse the
        # keys and values of their shared start: see _prefix_hit / _remember_prefix.
        self.prefix_cache = True
        self.prefix_min_tokens = 16
        self._prefixes: OrderedDict[tuple[str, tuple[int, ...]], list[tuple[Any, Any]]] = OrderedDict()
        self._recent: deque[tuple[str, tuple[int, ...]]] = deque(maxlen=32)
        self._peft: Any = None
        self._adapters: dict[str, _Adapter] = {}  # path -> the version serving new requests
        self._retired: list[_Adapter] = []  # replaced versions, dropped when no row uses them
        self._adapter_seq = 0
        self._checked: dict[tuple[str, str], None] = {}
        self._thread = threading.Thread(target=self._run, name="studyhall-batch-engine", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public API
    def submit(self, request: Request) -> Request:
        if self._stopped:
            raise RuntimeError("engine is closed")
        n_prompt = len(request.prompt_ids)
        if n_prompt == 0:
            raise ValueError("empty prompt")
        if n_prompt >= self.context_length:
            from studyhall.errors import ContextLengthError

            raise ContextLengthError(
                f"prompt has {n_prompt} tokens; the model's context holds {self.context_length}",
                hint="shorten the question or use a model with a longer context",
            )
        room = self.context_length - n_prompt
        if request.params.max_new_tokens > room:
            log.warning(
                "max_new_tokens %d does not fit after a %d-token prompt; using %d",
                request.params.max_new_tokens, n_prompt, room,
            )
            request.params.max_new_tokens = room
        if request.adapter:
            self.check_adapter(request.adapter)
        request.results = [None] * request.params.n
        self._queue.put(request)
        return request

    def check_adapter(self, path: str) -> None:
        """Raise AdapterError now (in the caller's thread) for a missing adapter or one
        trained on another base model; cached per version of the folder."""
        from studyhall.training.adapters import adapter_fingerprint, check_adapter_base

        key = (path, adapter_fingerprint(path))
        if key not in self._checked:
            check_adapter_base(path, self.model_path)
            self._checked[key] = None

    def reload_adapter(self, path: str) -> Future:
        """Load the adapter folder at ``path`` again (even if its files look unchanged).
        In-flight rows finish on the version they started with. Resolves when loaded."""
        return self._control(lambda: self._load_adapter(str(path)).name)

    def loaded_adapters(self) -> dict[str, str]:
        """path -> fingerprint of the adapter versions that serve new requests."""
        return {p: a.fingerprint for p, a in self._adapters.items()}

    def call(self, fn: Callable[[], Any]) -> Future:
        """Run ``fn`` on the engine's worker thread between forward passes; resolves with its
        result. Torch work on the model belongs there: a second thread running OpenMP work
        leaves the process with more OpenMP threads than CPUs, and libgomp then throttles the
        barrier spin of every parallel region (a single-stream decode step of the default model
        went from ~80 to ~125 ms at 2 threads, and stays slow while that thread lives)."""
        return self._control(fn)

    def _control(self, fn: Callable[[], Any]) -> Future:
        if self._stopped:
            raise RuntimeError("engine is closed")
        item = _Control(fn)
        self._queue.put(item)  # type: ignore[arg-type]
        return item.future

    def generate(self, prompt_ids: list[int], params: SamplingParams, **kw: Any) -> list[Completion]:
        """Blocking convenience: submit and wait."""
        return self.submit(Request(prompt_ids, params, **kw)).future.result()

    def close(self) -> None:
        self._stopped = True
        self._queue.put(None)
        self._thread.join(timeout=30)

    # ------------------------------------------------------------------ worker
    def _eos_ids(self) -> list[int]:
        ids: list[int] = []
        gen = getattr(self.model, "generation_config", None)
        eos = getattr(gen, "eos_token_id", None) if gen is not None else None
        for value in (eos, self.tokenizer.eos_token_id):
            if isinstance(value, int):
                ids.append(value)
            elif isinstance(value, (list, tuple)):
                ids.extend(int(v) for v in value)
        for tok in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>"):
            tid = self.tokenizer.convert_tokens_to_ids(tok)
            if isinstance(tid, int) and tid >= 0 and tid != self.tokenizer.unk_token_id:
                ids.append(tid)
        return sorted(set(ids)) or [0]

    def _run(self) -> None:
        import torch

        if self.threads:  # OpenMP thread counts are per thread: set them where the work runs
            torch.set_num_threads(self.threads)
        with torch.inference_mode():
            while True:
                try:
                    if not self._admit():
                        return
                    if self._rows:
                        self._step()
                except Exception as exc:  # a failed batch fails its requests, not the engine
                    log.exception("generation failed")
                    self._fail_all(exc)

    def _admit(self) -> bool:
        """Move waiting requests into the batch. Returns False when the engine is closing."""
        pending: list[Request] = []
        if not self._rows:
            item = self._queue.get()  # idle: block until work arrives
            if item is None:
                return False
            if isinstance(item, _Control):
                self._run_control(item)
                return True
            pending.append(item)
            # Gather while requests keep arriving (each one extends the window a little),
            # so a burst from many graph runs is prefilled as one batch.
            start = time.perf_counter()
            deadline = start + self.batch_wait
            hard_stop = start + 10 * self.batch_wait
            while (left := min(deadline, hard_stop) - time.perf_counter()) > 0:
                try:
                    item = self._queue.get(timeout=left)
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                if isinstance(item, _Control):
                    self._run_control(item)
                    continue
                pending.append(item)
                if sum(r.params.n for r in pending) >= self.max_batch_size:
                    break
                deadline = time.perf_counter() + self.batch_wait
        elif self._mergeable:
            room = self.max_batch_size - len(self._rows)
            while room > 0:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                if isinstance(item, _Control):
                    self._run_control(item)
                    continue
                pending.append(item)
                room -= item.params.n
        # Keep rows within max_batch_size; anything over waits for the next step.
        taken, used = [], len(self._rows)
        for i, req in enumerate(pending):
            if req.cancelled.is_set():
                self._finish_cancelled(req)
                continue
            if used and used + req.params.n > self.max_batch_size:
                for later in pending[i:]:
                    self._queue.put(later)
                break
            if req.adapter:
                try:
                    req.loaded_as = self._adapter_for(req.adapter)
                except Exception as exc:  # a bad adapter fails its request, not the batch
                    log.warning("adapter %s failed to load: %s", req.adapter, exc)
                    if not req.future.done():
                        req.future.set_exception(exc)
                    continue
            taken.append(req)
            used += req.params.n
        if taken:
            self.stats["admissions"] += 1  # times new requests entered: 1 for a burst caught whole
            try:
                self._prefill(taken)
            except Exception as exc:  # a prompt that fails to prefill fails only its requests
                log.exception("prefill failed")
                for req in taken:
                    if not req.future.done():
                        req.future.set_exception(exc)
        return True

    def _prefill(self, requests: list[Request]) -> None:
        """Prefill new requests into the batch: one distinct prompt at a time when the cache
        can be merged (a failed prompt fails only its own requests), else as one batch."""
        groups: dict[tuple[str, tuple[int, ...]], list[Request]] = {}
        for req in requests:
            groups.setdefault(_prompt_key(req), []).append(req)
        if not (self.prefill_each and self._mergeable and len(groups) > 1):
            self._prefill_batch(requests)
            return
        for i, group in enumerate(groups.values()):
            if not self._mergeable:  # learned from the first prefill: the rest wait for this batch
                for later in list(groups.values())[i:]:
                    for req in later:
                        self._queue.put(req)
                return
            try:
                self._prefill_batch(group)
            except Exception as exc:
                log.exception("prefill failed")
                for req in group:
                    if not req.future.done():
                        req.future.set_exception(exc)

    def _prefill_batch(self, requests: list[Request]) -> None:
        import torch

        from studyhall.serving.kv_cache import new_cache

        # Identical prompts (n samples, or the same question asked twice) prefill once.
        unique: dict[tuple[str, tuple[int, ...]], int] = {}
        row_src: list[int] = []
        rows: list[_Row] = []
        for req in requests:
            key = _prompt_key(req)
            src = unique.setdefault(key, len(unique))
            for i in range(req.params.n):
                rows.append(_Row(req, i, key[0]))
                row_src.append(src)
        prompts = [p for _, p in unique]
        adapter_names = [a for a, _ in unique]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for r, p in enumerate(prompts):
            ids[r, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[r, width - len(p):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        started = time.perf_counter()
        cache = new_cache(self.model.config)
        single = len(prompts) == 1 and self.prefix_cache and self._mergeable
        reused = self._prefix_hit(cache, adapter_names[0], prompts[0]) if single else 0
        out = self.model(
            input_ids=ids[:, reused:].to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=pos[:, reused:].to(self.device),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
            **self._adapter_kwargs(adapter_names),
        )
        cache = out.cache
        self.stats["prefills"] += 1
        self.stats["prefill_tokens"] += int(mask.sum()) - reused
        self.stats["prefill_seconds"] += time.perf_counter() - started
        if single:
            self._remember_prefix(cache, adapter_names[0], prompts[0])
        logits = out.logits[:, -1, :]
        index = torch.tensor(row_src, dtype=torch.long)
        if len(rows) != len(prompts) or row_src != list(range(len(prompts))):
            cache.batch_select_indices(index.to(self.device))
            logits = logits[index.to(self.device)]
            mask = mask[index]
        next_pos = mask.sum(-1)
        first = self._sample(logits, rows)
        self._merge(rows, cache, mask, next_pos)
        self._advance(first, rows_offset=len(self._rows) - len(rows))

    def clear_prefix_cache(self) -> Future:
        """Forget remembered prompt starts (benchmarks: every level starts cold)."""

        def clear() -> None:
            self._prefixes.clear()
            self._recent.clear()

        return self._control(clear)

    def _prefix_hit(self, cache: Any, adapter: str, prompt: tuple[int, ...]) -> int:
        """Fill ``cache`` with the longest remembered start of ``prompt`` (same adapter) and
        return its length; 0 when none. The prompt's last token is always computed (its logits
        pick the first new token)."""
        best: tuple[str, tuple[int, ...]] | None = None
        for key in self._prefixes:
            a, start = key
            if (a == adapter and len(start) < len(prompt) and prompt[: len(start)] == start
                    and (best is None or len(start) > len(best[1]))):
                best = key
        if best is None:
            return 0
        self._prefixes.move_to_end(best)
        for layer, (k, v) in zip(cache.layers, self._prefixes[best], strict=True):
            layer.lazy_initialization(k, v)
            layer.keys, layer.values = k, v  # GrowingLayer copies before it appends
        self.stats["prefix_hits"] += 1
        self.stats["prefix_tokens"] += len(best[1])
        return len(best[1])

    def _remember_prefix(self, cache: Any, adapter: str, prompt: tuple[int, ...]) -> None:
        """Keep the keys and values of the longest start this prompt shares with a recent one
        (an identical prompt: all but its last token), if that is long enough to be worth it."""
        longest = 0
        for a, other in self._recent:
            if a != adapter:
                continue
            n = min(len(other), len(prompt))
            i = 0
            while i < n and other[i] == prompt[i]:
                i += 1
            longest = max(longest, i)
        self._recent.append((adapter, prompt))
        longest = min(longest, len(prompt) - 1)
        key = (adapter, prompt[:longest])
        if longest < self.prefix_min_tokens or key in self._prefixes:
            return
        layers = self._cache_layers(cache)
        if not self._mergeable:
            return
        self._prefixes[key] = [(layer.keys[:, :, :longest].clone(), layer.values[:, :, :longest].clone())
                               for layer in layers]
        while len(self._prefixes) > 16:
            self._prefixes.popitem(last=False)

    def _cache_layers(self, cache: Any) -> list[Any]:
        from transformers.cache_utils import DynamicLayer

        from studyhall.serving.kv_cache import GrowingLayer

        layers = list(cache.layers)
        if any(type(layer) not in (DynamicLayer, GrowingLayer) for layer in layers):
            self._mergeable = False  # sliding-window caches cannot be re-aligned; batch statically
        return layers

    def _merge(self, rows: list[_Row], cache: Any, mask: Any, next_pos: Any) -> None:
        import torch

        layers = self._cache_layers(cache)
        if not self._rows:
            self._rows, self._cache, self._mask, self._next_pos = rows, cache, mask, next_pos
            self._last = torch.zeros(len(rows), dtype=torch.long)
            return
        old_t, new_t = self._mask.shape[1], mask.shape[1]
        width = max(old_t, new_t)

        def pad_left(t: Any, extra: int) -> Any:
            if extra == 0:
                return t
            shape = list(t.shape)
            shape[-2 if t.dim() == 4 else -1] = extra
            zeros = torch.zeros(shape, dtype=t.dtype, device=t.device)
            return torch.cat([zeros, t], dim=-2 if t.dim() == 4 else -1)

        for mine, theirs in zip(self._cache.layers, layers, strict=True):
            mine.keys = torch.cat([pad_left(mine.keys, width - old_t), pad_left(theirs.keys, width - new_t)], 0)
            mine.values = torch.cat(
                [pad_left(mine.values, width - old_t), pad_left(theirs.values, width - new_t)], 0
            )
        self._mask = torch.cat([pad_left(self._mask, width - old_t), pad_left(mask, width - new_t)], 0)
        self._next_pos = torch.cat([self._next_pos, next_pos], 0)
        self._last = torch.cat([self._last, torch.zeros(len(rows), dtype=torch.long)], 0)
        self._rows = self._rows + rows

    def _step(self) -> None:
        import torch

        started = time.perf_counter()
        ones = torch.ones((len(self._rows), 1), dtype=torch.long)
        self._mask = torch.cat([self._mask, ones], dim=1)
        out = self.model(
            input_ids=self._last[:, None].to(self.device),
            attention_mask=self._mask.to(self.device),
            position_ids=self._next_pos[:, None].to(self.device),
            cache=self._cache,
            use_cache=True,
            logits_to_keep=1,
            **self._adapter_kwargs([row.adapter for row in self._rows]),
        )
        self._cache = out.cache
        self._next_pos = self._next_pos + 1
        self.stats["steps"] += 1
        self.stats["max_rows"] = max(self.stats["max_rows"], len(self._rows))
        self.stats["decode_row_steps"] += len(self._rows)
        self.stats["decode_seconds"] += time.perf_counter() - started
        tokens = self._sample(out.logits[:, -1, :], self._rows)
        self._advance(tokens, rows_offset=0)

    def _sample(self, logits: Any, rows: list[_Row]) -> list[int]:
        import torch

        logits = logits.float()
        chosen = logits.argmax(-1).tolist()
        for i, row in enumerate(rows):
            p = row.request.params
            if p.temperature <= 0:
                continue
            scores = logits[i] / p.temperature
            if p.top_k and p.top_k > 0:
                kth = torch.topk(scores, min(p.top_k, scores.numel())).values[-1]
                scores = scores.masked_fill(scores < kth, float("-inf"))
            probs = torch.softmax(scores, -1)
            if 0 < p.top_p < 1:
                sorted_p, order = torch.sort(probs, descending=True)
                keep = sorted_p.cumsum(-1) - sorted_p < p.top_p
                filtered = torch.zeros_like(probs)
                filtered[order[keep]] = sorted_p[keep]
                probs = filtered / filtered.sum()
            chosen[i] = int(torch.multinomial(probs.cpu(), 1, generator=row.generator).item())
        return chosen

    def _advance(self, tokens: list[int], rows_offset: int) -> None:
        """Append sampled tokens to rows from rows_offset on; retire finished rows."""

        keep: list[int] = []
        for i, row in enumerate(self._rows):
            if i < rows_offset:
                keep.append(i)
                continue
            token = tokens[i - rows_offset]
            req, p = row.request, row.request.params
            reason = None
            if req.cancelled.is_set():
                reason = "cancelled"
            elif token in self.eos_ids and not p.ignore_eos:
                reason = "stop"
            else:
                row.ids.append(token)
                self.stats["tokens"] += 1
                text = self.tokenizer.decode(row.ids, skip_special_tokens=True)
                cut = _stop_position(text, p.stop) if p.stop else -1
                if cut >= 0:
                    text, reason = text[:cut], "stop"
                elif len(row.ids) >= p.max_new_tokens:
                    reason = "length"
                row.text = text
                if reason is None:
                    self._emit(row, final=False)
            if reason is None:
                keep.append(i)
                self._last[i] = token
                continue
            self._emit(row, final=True)
            self._retire(row, reason)
        if len(keep) != len(self._rows):
            self._select(keep)

    def _emit(self, row: _Row, final: bool) -> None:
        cb = row.request.on_text
        text = row.text
        stable = len(text) if final else len(text) - row.stop_holdback
        if not final:
            while stable > 0 and text[stable - 1] == "\ufffd":  # an unfinished UTF-8 sequence
                stable -= 1
        if stable > row.emitted:
            if cb is not None:
                try:
                    cb(row.index, text[row.emitted:stable])
                except Exception:  # a broken consumer must not kill the batch
                    log.exception("stream callback failed")
            row.emitted = stable

    def _retire(self, row: _Row, reason: str) -> None:
        req = row.request
        req.results[row.index] = Completion(
            text=row.text,
            token_ids=list(row.ids),
            finish_reason=reason,
            prompt_tokens=len(req.prompt_ids),
            completion_tokens=len(row.ids),
            seconds=time.perf_counter() - req.submitted,
        )
        if all(r is not None for r in req.results) and not req.future.done():
            req.future.set_result(list(req.results))

    def _select(self, keep: list[int]) -> None:
        import torch

        self._rows = [self._rows[i] for i in keep]
        if self._retired:
            self._drop_retired()
        if not self._rows:
            self._cache = self._mask = self._next_pos = self._last = None
            return
        idx = torch.tensor(keep, dtype=torch.long)
        self._mask = self._mask[idx]
        self._next_pos = self._next_pos[idx]
        self._last = self._last[idx]
        self._cache.batch_select_indices(idx.to(self.device))
        # Drop leading columns that are padding for every remaining row.
        start = int((self._mask.sum(0) > 0).nonzero()[0].item())
        if start > 0 and self._mergeable:
            self._mask = self._mask[:, start:]
            for layer in self._cache.layers:
                layer.keys = layer.keys[:, :, start:]
                layer.values = layer.values[:, :, start:]

    def _finish_cancelled(self, req: Request) -> None:
        req.results = [
            Completion("", [], "cancelled", len(req.prompt_ids), 0, time.perf_counter() - req.submitted)
            for _ in range(req.params.n)
        ]
        if not req.future.done():
            req.future.set_result(req.results)

    def _fail_all(self, exc: Exception) -> None:
        for row in self._rows:
            if not row.request.future.done():
                row.request.future.set_exception(exc)
        self._rows = []
        self._cache = self._mask = self._next_pos = self._last = None

    # ------------------------------------------------------------------ adapters (engine thread)
    def _run_control(self, item: _Control) -> None:
        try:
            item.future.set_result(item.fn())
        except Exception as exc:
            item.future.set_exception(exc)

    def _adapter_kwargs(self, names: list[str]) -> dict[str, Any]:
        return {"adapter_names": names} if self._peft is not None else {}

    def _adapter_for(self, path: str) -> str:
        """The peft name serving ``path`` now; loads it, or its new version, when needed."""
        from studyhall.training.adapters import adapter_fingerprint

        current = self._adapters.get(path)
        if current is not None and current.fingerprint == adapter_fingerprint(path):
            return current.name
        return self._load_adapter(path).name

    def _load_adapter(self, path: str) -> _Adapter:
        import torch
        from peft import PeftModel

        from studyhall.training.adapters import (
            AdapterError,
            adapter_fingerprint,
            check_adapter_base,
        )

        fingerprint = adapter_fingerprint(path)
        check_adapter_base(path, self.model_path)
        self._check_shapes(path)
        self._adapter_seq += 1
        name = f"adapter{self._adapter_seq}"
        started = time.perf_counter()
        # Parameters cannot be created under inference_mode (the engine thread's mode).
        with torch.inference_mode(False), torch.no_grad():
            try:
                if self._peft is None:
                    self._peft = PeftModel.from_pretrained(self.base_model, path, adapter_name=name)
                    self.model = self._peft
                else:
                    self._peft.load_adapter(path, adapter_name=name)
            except (RuntimeError, ValueError, KeyError) as exc:
                raise AdapterError(f"adapter {path} does not load on {self.model_path}: {exc}") from None
        self._peft.eval()
        loaded = _Adapter(name, path, fingerprint)
        old = self._adapters.get(path)
        self._adapters[path] = loaded
        if old is not None:
            self._retired.append(old)
            self._drop_retired()
        log.info("loaded adapter %s as %s in %.2fs", path, name, time.perf_counter() - started)
        return loaded

    def _check_shapes(self, path: str) -> None:
        """LoRA matrices must fit the base's layers: a clear error instead of peft's."""
        from pathlib import Path

        from studyhall.training.adapters import AdapterError

        weights = Path(path) / "adapter_model.safetensors"
        if not weights.exists():
            return
        from safetensors import safe_open

        modules = dict(self.base_model.named_modules())
        with safe_open(str(weights), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                if ".lora_A." not in key:
                    continue
                target = key.split(".lora_A.")[0].removeprefix("base_model.model.")
                module = modules.get(target)
                in_features = getattr(module, "in_features", None)
                shape = f.get_slice(key).get_shape()
                if module is None or (in_features is not None and shape[-1] != in_features):
                    raise AdapterError(
                        f"adapter {path} does not fit {self.model_path}: "
                        + (f"no layer {target}" if module is None else
                           f"{target} takes {in_features} inputs, the adapter's {shape[-1]}"),
                        hint="it was trained on another base model; load that model instead",
                    )

    def _drop_retired(self) -> None:
        in_use = {row.adapter for row in self._rows}
        keep = []
        for old in self._retired:
            if old.name in in_use or len(self._peft.peft_config) <= 1:
                keep.append(old)
                continue
            self._peft.delete_adapter(old.name)
            log.info("dropped adapter version %s of %s", old.name, old.path)
        self._retired = keep
