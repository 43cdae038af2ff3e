"""A scripted chat model: deterministic replies chosen by regex on the prompt.

Used by the tests (graph control flow without weights) and usable as ``fake:SCRIPT.json``
from the CLI. Replies are picked by the first rule whose pattern matches the prompt text, so
concurrent graph runs get the same answers whatever order they call in.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import BaseModel, Field, PrivateAttr

from studyhall.errors import BackendError, InputError
from studyhall.serving.messages import to_chat_dicts, usage


class Rule(BaseModel):
    """When ``pattern`` is found in the prompt, reply with the next of ``replies``
    (the last one repeats). ``fail_times`` first calls raise a BackendError instead."""

    pattern: str = ""
    replies: list[str] = Field(default_factory=list)
    fail_times: int = 0
    error: str = "scripted backend failure"
    fatal: bool = False  # raise a non-retryable RuntimeError instead of a BackendError
    delay: float = 0.0  # seconds to wait before replying (simulates a slow or hung backend)


class ScriptedChatModel(BaseChatModel):
    rules: list[Rule] = Field(default_factory=list)
    default: str = "I am not sure.\nAnswer: 0"
    spec: str = "fake:scripted"
    token_delay: float = 0.0  # seconds between streamed words (to test interruption)

    _counts: dict[int, int] = PrivateAttr(default_factory=dict)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _calls: list[dict[str, Any]] = PrivateAttr(default_factory=list)

    @property
    def calls(self) -> list[dict[str, Any]]:
        """Every prompt seen, with the options it was called with."""
        return self._calls

    @classmethod
    def from_rules(cls, *pairs: tuple[str, str | list[str]], **kw: Any) -> ScriptedChatModel:
        rules = [Rule(pattern=p, replies=[r] if isinstance(r, str) else list(r)) for p, r in pairs]
        return cls(rules=rules, **kw)

    @classmethod
    def from_file(cls, path: str | Path) -> ScriptedChatModel:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read fake model script {path}: {exc}") from None
        return cls(spec=f"fake:{path}", **data)

    @property
    def _llm_type(self) -> str:
        return "studyhall-scripted"

    def _rule(self, prompt: str) -> tuple[int, Rule] | None:
        for i, rule in enumerate(self.rules):
            if re.search(rule.pattern, prompt, re.S):
                return i, rule
        return None

    def _next(self, prompt: str, kwargs: dict[str, Any]) -> str:
        with self._lock:
            self._calls.append({"prompt": prompt, "options": dict(kwargs)})
            found = self._rule(prompt)
            if found is None:
                return self.default
            i, rule = found
            count = self._counts.get(i, 0)
            self._counts[i] = count + 1
            if count < rule.fail_times:
                if rule.fatal:
                    raise RuntimeError(rule.error)
                raise BackendError(rule.error)
            replies = rule.replies or [self.default]
            return replies[min(count - rule.fail_times, len(replies) - 1)]

    def _prompt(self, messages: list[BaseMessage]) -> str:
        return "\n".join(f"{d['role']}: {d['content']}" for d in to_chat_dicts(messages))

    def _delay(self, prompt: str) -> float:
        found = self._rule(prompt)
        return found[1].delay if found else 0.0

    def _replies(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> tuple[str, list[str]]:
        prompt = self._prompt(messages)
        n = int(kwargs.get("n", 1))
        return prompt, [self._next(prompt, kwargs) for _ in range(n)]

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if delay := self._delay(self._prompt(messages)):
            time.sleep(delay)
        return self._result(*self._replies(messages, kwargs))

    def _result(self, prompt: str, replies: list[str]) -> ChatResult:
        p = len(prompt.split())
        gens = [
            ChatGeneration(
                message=AIMessage(content=r, usage_metadata=usage(p, len(r.split())),
                                  response_metadata={"finish_reason": "stop", "model_name": self.spec})
            )
            for r in replies
        ]
        return ChatResult(generations=gens)

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        import asyncio

        if delay := self._delay(self._prompt(messages)):
            await asyncio.sleep(delay)
        return self._result(*self._replies(messages, kwargs))

    def _words(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> tuple[int, list[str]]:
        prompt, replies = self._replies(messages, {**kwargs, "n": 1})
        return len(prompt.split()), re.findall(r"\S+\s*|\s+", replies[0])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        p, words = self._words(messages, kwargs)
        for w in words:
            if self.token_delay:
                time.sleep(self.token_delay)
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=w))
            if run_manager:
                run_manager.on_llm_new_token(w, chunk=chunk)
            yield chunk
        yield ChatGenerationChunk(message=AIMessageChunk(content="", usage_metadata=usage(p, len(words))))

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        import asyncio

        p, words = self._words(messages, kwargs)
        for w in words:
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=w))
            if run_manager:
                await run_manager.on_llm_new_token(w, chunk=chunk)
            yield chunk
        yield ChatGenerationChunk(message=AIMessageChunk(content="", usage_metadata=usage(p, len(words))))
