"""What every agent shares: call a chat model, time it, count tokens, parse tolerantly.

Small models cannot do JSON tool calling, so agents ask for plain text in a fixed shape and
parse it with a forgiving parser. A parse failure is retried once with a reminder of the
format; a second failure becomes a recorded ``parse_error`` verdict, never a crash.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig

from studyhall.records import AgentStep, ChatTurn
from studyhall.serving.messages import to_chat_dicts

T = TypeVar("T")


class ParseError(ValueError):
    """The completion does not have the shape the agent asked for."""


@dataclass
class AgentOutput(Generic[T]):
    """A parsed result (None on parse failure) and the step record to keep."""

    value: T | None
    step: AgentStep

    @property
    def ok(self) -> bool:
        return self.value is not None


def messages(system: str, user: str, history: Sequence[BaseMessage] = ()) -> list[BaseMessage]:
    return [SystemMessage(system), *history, HumanMessage(user)]


def _turns(msgs: Sequence[BaseMessage]) -> list[ChatTurn]:
    return [ChatTurn(**d) for d in to_chat_dicts(list(msgs))]


def _usage(message: AIMessage) -> tuple[int, int]:
    meta = getattr(message, "usage_metadata", None) or {}
    return int(meta.get("input_tokens", 0)), int(meta.get("output_tokens", 0))


async def call_agent(
    model: BaseChatModel,
    msgs: list[BaseMessage],
    parse: Callable[[str], T],
    *,
    role: str,
    node: str,
    config: RunnableConfig | None = None,
    reminder: str | None = None,
    round: int = 0,
    **sampling: Any,
) -> AgentOutput[T]:
    """One agent turn: invoke, parse, retry once on a parse failure with a format reminder."""
    started = time.perf_counter()
    bound = model.bind(**sampling) if sampling else model
    prompt_tokens = completion_tokens = 0
    convo = list(msgs)
    text = ""
    for attempt in (1, 2):
        reply = await bound.ainvoke(convo, config=config)
        text = reply.text if isinstance(reply, AIMessage) else str(reply.content)
        p, c = _usage(reply)
        prompt_tokens += p
        completion_tokens += c
        try:
            value = parse(text)
        except ParseError as exc:
            if attempt == 2:
                step = AgentStep(
                    role=role, node=node, prompt=_turns(msgs), completion=text,
                    parsed={"error": str(exc)}, verdict="parse_error",
                    prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                    seconds=time.perf_counter() - started, attempts=2, round=round,
                )
                return AgentOutput(None, step)
            convo = [*msgs, AIMessage(text), HumanMessage(reminder or f"Please answer in the required format. ({exc})")]
            continue
        step = AgentStep(
            role=role, node=node, prompt=_turns(msgs), completion=text,
            parsed=_dump(value), verdict="ok",
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
            seconds=time.perf_counter() - started, attempts=attempt, round=round,
        )
        return AgentOutput(value, step)
    raise AssertionError("unreachable")


async def sample_agent(
    model: BaseChatModel,
    msgs: list[BaseMessage],
    parse: Callable[[str], T],
    *,
    n: int,
    role: str,
    node: str,
    config: RunnableConfig | None = None,
    round: int = 0,
    first_sample: int = 0,
    **sampling: Any,
) -> list[AgentOutput[T]]:
    """n samples of one prompt in one backend call (they share the prompt's prefill).

    Unparseable samples are recorded as parse_error (no retry: other samples stand in).
    """
    started = time.perf_counter()
    base, bound_kwargs = unbind(model)
    options = {**bound_kwargs, **sampling, "n": n, "stream": False}
    result = await base.agenerate([msgs], callbacks=(config or {}).get("callbacks"), **options)
    gens = result.generations[0]
    elapsed = time.perf_counter() - started
    outs: list[AgentOutput[T]] = []
    for i, gen in enumerate(gens):
        message = gen.message if hasattr(gen, "message") else AIMessage(gen.text)
        text = gen.text
        p, c = _usage(message)
        if i > 0:
            p = 0  # the prompt was read once for all samples
        try:
            value: T | None = parse(text)
            verdict, parsed = "ok", _dump(value)
        except ParseError as exc:
            value, verdict, parsed = None, "parse_error", {"error": str(exc)}
        step = AgentStep(
            role=role, node=node, prompt=_turns(msgs) if i == 0 else [], completion=text,
            parsed=parsed, verdict=verdict, prompt_tokens=p, completion_tokens=c,
            seconds=elapsed, sample=first_sample + i, round=round,
        )
        outs.append(AgentOutput(value, step))
    return outs


def unbind(model: Any) -> tuple[BaseChatModel, dict[str, Any]]:
    """The chat model under any ``.bind()`` layers, and the options they bound.

    ``agenerate`` (needed for n samples) is not a Runnable method, so bound options must be
    passed to it explicitly.
    """
    from langchain_core.runnables import RunnableBinding

    kwargs: dict[str, Any] = {}
    while isinstance(model, RunnableBinding):
        kwargs = {**model.kwargs, **kwargs}
        model = model.bound
    return model, kwargs


def _dump(value: Any) -> dict[str, Any]:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return value
    return {"value": value}
