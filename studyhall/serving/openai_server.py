"""An OpenAI-compatible HTTP server over any studyhall chat model (``studyhall serve``).

Several studyhall processes (chat, eval, loop) can share one loaded model through it with
the ``openai:http://HOST:PORT/v1#MODEL`` spec. Endpoints: GET /health, GET /v1/models,
POST /v1/chat/completions (with ``stream: true`` as server-sent events).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

_OPTIONS = ("n", "temperature", "top_p", "top_k", "max_tokens", "seed", "stop")


def _messages(raw: Any) -> list[BaseMessage]:
    if not isinstance(raw, list) or not raw:
        raise ValueError("messages must be a non-empty list")
    out: list[BaseMessage] = []
    for m in raw:
        role, content = m.get("role"), m.get("content")
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise ValueError("each message needs string content")
        cls = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}.get(role)
        if cls is None:
            raise ValueError(f"unknown role {role!r}")
        out.append(cls(content))
    return out


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status_code=status)


def create_app(model: BaseChatModel, model_name: str) -> Starlette:
    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "model": model_name})

    async def models(_: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "studyhall"}]})

    async def chat(request: Request) -> Any:
        try:
            body = await request.json()
            msgs = _messages(body.get("messages"))
        except (ValueError, AttributeError) as exc:
            return _error(400, str(exc))
        opts = {k: body[k] for k in _OPTIONS if body.get(k) is not None}
        if isinstance(opts.get("stop"), str):
            opts["stop"] = [opts["stop"]]
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if body.get("stream"):
            opts.pop("n", None)
            return StreamingResponse(_stream(model, msgs, opts, rid, created, model_name), media_type="text/event-stream")
        try:
            result = await model.agenerate([msgs], **opts)
        except Exception as exc:
            return _error(500, f"{type(exc).__name__}: {exc}")
        gens = result.generations[0]
        p = c = 0
        choices = []
        for i, g in enumerate(gens):
            u = getattr(g.message, "usage_metadata", None) or {}
            p = max(p, int(u.get("input_tokens", 0)))
            c += int(u.get("output_tokens", 0))
            finish = (g.generation_info or {}).get("finish_reason") or "stop"
            choices.append({"index": i, "message": {"role": "assistant", "content": g.text},
                            "finish_reason": "length" if finish == "length" else "stop"})
        return JSONResponse({
            "id": rid, "object": "chat.completion", "created": created, "model": model_name,
            "choices": choices,
            "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
        })

    return Starlette(routes=[
        Route("/health", health),
        Route("/v1/models", models),
        Route("/v1/chat/completions", chat, methods=["POST"]),
    ])


async def _stream(model: BaseChatModel, msgs: list[BaseMessage], opts: dict[str, Any], rid: str, created: int, name: str):
    def event(delta: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None) -> str:
        data: dict[str, Any] = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": name,
                                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if usage is None else []}
        if usage is not None:
            data["usage"] = usage
        return f"data: {json.dumps(data)}\n\n"

    yield event({"role": "assistant", "content": ""})
    p = c = 0
    try:
        async for chunk in model.astream(msgs, **opts):
            if chunk.text:
                yield event({"content": chunk.text})
            u = getattr(chunk, "usage_metadata", None)
            if u:
                p, c = int(u.get("input_tokens", p)), int(u.get("output_tokens", c))
    except Exception as exc:
        yield f"data: {json.dumps({'error': {'message': f'{type(exc).__name__}: {exc}'}})}\n\n"
        return
    yield event({}, finish="stop")
    yield event({}, usage={"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
    yield "data: [DONE]\n\n"


def serve(model: BaseChatModel, model_name: str, host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    uvicorn.run(create_app(model, model_name), host=host, port=port, log_level="warning")
