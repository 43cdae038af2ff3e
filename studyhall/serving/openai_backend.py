"""A chat model for any OpenAI-compatible server (vLLM's, llama.cpp's, Ollama's, ours).

Speaks ``POST {base}/chat/completions`` with n, temperature, top_p, max_tokens, stop, seed
and streaming (server-sent events), and reports the server's token usage.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import Field

from studyhall.errors import BackendError
from studyhall.serving.messages import to_chat_dicts, usage

_PASS = ("n", "temperature", "top_p", "top_k", "seed", "max_tokens")


class OpenAIChatModel(BaseChatModel):
    base_url: str = Field(description="e.g. http://127.0.0.1:8000/v1")
    model: str
    api_key: str = "EMPTY"
    max_tokens: int = 384
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    seed: int | None = None
    timeout: float = 600.0

    @property
    def spec(self) -> str:
        return f"openai:{self.base_url}#{self.model}"

    @property
    def _llm_type(self) -> str:
        return "studyhall-openai"

    def _body(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any], stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": to_chat_dicts(messages),
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "n": self.n,
        }
        if self.seed is not None:
            body["seed"] = self.seed
        for key in _PASS:
            if key in kwargs:
                body[key] = kwargs[key]
        if "max_new_tokens" in kwargs:
            body["max_tokens"] = kwargs["max_new_tokens"]
        if "adapter" in kwargs and kwargs["adapter"]:
            body["model"] = kwargs["adapter"]  # vLLM serves LoRA adapters under their own names
        stops = list(stop or []) + list(kwargs.get("stop") or [])
        if stops:
            body["stop"] = stops
        if stream:
            body["n"] = 1
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def _error(self, exc: Exception) -> BackendError:
        if isinstance(exc, httpx.HTTPStatusError):
            return BackendError(
                f"{self.base_url} answered {exc.response.status_code}: {exc.response.text[:500]}"
            )
        return BackendError(
            f"cannot reach the model server at {self.base_url}: {type(exc).__name__}: {exc}",
            hint="start the server (e.g. studyhall serve) or check the openai:URL#MODEL spec",
        )

    def _result(self, data: dict[str, Any]) -> ChatResult:
        u = data.get("usage") or {}
        p, c = int(u.get("prompt_tokens", 0)), int(u.get("completion_tokens", 0))
        choices = sorted(data.get("choices", []), key=lambda ch: ch.get("index", 0))
        gens = []
        for i, ch in enumerate(choices):
            text = (ch.get("message") or {}).get("content") or ""
            per_c = c // max(1, len(choices))
            meta = {"finish_reason": ch.get("finish_reason"), "model_name": self.spec}
            gens.append(ChatGeneration(
                message=AIMessage(content=text, usage_metadata=usage(p if i == 0 else 0, per_c), response_metadata=meta),
                generation_info={"finish_reason": ch.get("finish_reason")},
            ))
        return ChatResult(generations=gens, llm_output={"token_usage": usage(p, c), "model_name": self.spec})

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        try:
            with httpx.Client(timeout=self.timeout) as client:
                r = client.post(f"{self.base_url}/chat/completions", json=self._body(messages, stop, kwargs, False), headers=self._headers())
                r.raise_for_status()
                return self._result(r.json())
        except httpx.HTTPError as exc:
            raise self._error(exc) from exc

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                r = await client.post(f"{self.base_url}/chat/completions", json=self._body(messages, stop, kwargs, False), headers=self._headers())
                r.raise_for_status()
                return self._result(r.json())
        except httpx.HTTPError as exc:
            raise self._error(exc) from exc

    def _chunk(self, line: str) -> ChatGenerationChunk | None:
        if not line.startswith("data:"):
            return None
        payload = line[5:].strip()
        if payload == "[DONE]":
            return None
        data = json.loads(payload)
        if data.get("usage") and not data.get("choices"):
            u = data["usage"]
            return ChatGenerationChunk(message=AIMessageChunk(
                content="", usage_metadata=usage(int(u.get("prompt_tokens", 0)), int(u.get("completion_tokens", 0)))))
        choices = data.get("choices") or []
        if not choices:
            return None
        delta = choices[0].get("delta") or {}
        finish = choices[0].get("finish_reason")
        return ChatGenerationChunk(
            message=AIMessageChunk(content=delta.get("content") or "",
                                   response_metadata={"finish_reason": finish} if finish else {}),
        )

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        try:
            with httpx.Client(timeout=self.timeout) as client, client.stream(
                "POST", f"{self.base_url}/chat/completions", json=self._body(messages, stop, kwargs, True), headers=self._headers()
            ) as r:
                r.raise_for_status()
                for line in r.iter_lines():
                    chunk = self._chunk(line)
                    if chunk is None:
                        continue
                    if run_manager and chunk.text:
                        run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                    yield chunk
        except httpx.HTTPError as exc:
            raise self._error(exc) from exc

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client, client.stream(
                "POST", f"{self.base_url}/chat/completions", json=self._body(messages, stop, kwargs, True), headers=self._headers()
            ) as r:
                r.raise_for_status()
                async for line in r.aiter_lines():
                    chunk = self._chunk(line)
                    if chunk is None:
                        continue
                    if run_manager and chunk.text:
                        await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                    yield chunk
        except httpx.HTTPError as exc:
            raise self._error(exc) from exc
