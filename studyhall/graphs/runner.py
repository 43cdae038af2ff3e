"""Run compiled graphs: one question or many at once, resumable, each run a Trajectory.

A run is keyed by its thread id. With a checkpointer, running the same thread id again
resumes an interrupted run from its last finished node, or returns a finished run as is.
A failing run records its error in its Trajectory and never stops the others.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from studyhall.errors import InputError
from studyhall.records import AgentStep, Trajectory, new_id
from studyhall.tools.answers import answers_match, normalize_number

_IN_TRAJECTORY = {"question", "gold", "examples", "steps", "answer", "solution", "confidence", "error", "solutions"}


def model_name(model: Any) -> str:
    from studyhall.agents.base import unbind

    base, _ = unbind(model)
    return str(getattr(base, "spec", None) or getattr(base, "model_name", None) or type(base).__name__)


def check_question(question: Any) -> str:
    if not isinstance(question, str) or not question.strip():
        raise InputError("the question is empty", hint="pass the problem text, e.g. studyhall solve \"What is 2+3?\"")
    return question.strip()


def trajectory_from_state(
    values: dict[str, Any],
    *,
    question: str,
    graph: str,
    model: str,
    thread_id: str,
    adapter: str | None = None,
    gold: str | None = None,
    error: str | None = None,
    seconds: float = 0.0,
    metadata: dict[str, Any] | None = None,
) -> Trajectory:
    steps = [AgentStep.model_validate(s) for s in values.get("steps") or []]
    answer = values.get("answer")
    gold_norm = normalize_number(gold) if gold is not None else None
    correct = answers_match(answer, gold_norm) if gold_norm is not None and error is None else None
    if error is None and values.get("error"):
        error = values["error"]
    meta = dict(metadata or {})
    # Graph-specific state (samples, votes, both reasoners' answers, new problems, prompt
    # history...) goes to metadata; what the Trajectory holds already is not copied.
    meta.update({k: v for k, v in values.items() if k not in _IN_TRAJECTORY})
    return Trajectory(
        id=thread_id,
        thread_id=thread_id,
        question=question,
        graph=graph,
        model=model,
        adapter=adapter,
        steps=steps,
        final_answer=answer,
        solution=values.get("solution"),
        confidence=values.get("confidence"),
        gold_answer=gold_norm,
        correct=correct,
        error=error,
        seconds=seconds,
        metadata=meta,
    )


OnUpdate = Callable[[str, dict[str, Any]], None]


async def _invoke_or_resume(
    graph: Any, inputs: dict[str, Any], config: dict[str, Any], on_update: OnUpdate | None = None
) -> dict[str, Any]:
    payload: dict[str, Any] | None = inputs
    if graph.checkpointer is not None:
        state = await graph.aget_state(config)
        if state.next:  # interrupted mid-graph: continue from the last finished node
            payload = None
        elif state.values.get("question"):  # finished earlier
            return state.values
    if on_update is None:
        return await graph.ainvoke(payload, config)
    values: dict[str, Any] = {}
    async for mode, chunk in graph.astream(payload, config, stream_mode=["updates", "values"]):
        if mode == "values":
            values = chunk
        elif isinstance(chunk, dict):
            for node, update in chunk.items():
                if isinstance(update, dict):
                    on_update(node, update)
    return values


async def arun(
    graph: Any,
    question: str,
    *,
    graph_name: str,
    model: str,
    adapter: str | None = None,
    thread_id: str | None = None,
    gold: str | None = None,
    examples: Sequence[dict[str, Any]] | None = None,
    metadata: dict[str, Any] | None = None,
    extra_inputs: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    on_update: OnUpdate | None = None,
) -> Trajectory:
    """Run (or resume) one question; errors are recorded, not raised."""
    question = check_question(question)
    thread_id = thread_id or new_id()
    run_config: dict[str, Any] = {"recursion_limit": 200, **(config or {})}
    run_config["configurable"] = {**run_config.get("configurable", {}), "thread_id": thread_id}
    inputs: dict[str, Any] = {"question": question, "gold": gold, "steps": [], **(extra_inputs or {})}
    if examples:
        inputs["examples"] = list(examples)
    started = time.perf_counter()
    error = None
    try:
        values = await _invoke_or_resume(graph, inputs, run_config, on_update)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # one failed run must not stop a batch
        error = f"{type(exc).__name__}: {exc}"
        values = {}
        if graph.checkpointer is not None:
            try:
                values = (await graph.aget_state(run_config)).values
            except Exception:  # pragma: no cover - the store itself failed
                values = {}
    return trajectory_from_state(
        values, question=question, graph=graph_name, model=model, thread_id=thread_id,
        adapter=adapter, gold=gold, error=error, seconds=time.perf_counter() - started,
        metadata=metadata,
    )


async def arun_many(
    graph: Any,
    items: Sequence[dict[str, Any]],
    *,
    graph_name: str,
    model: str,
    adapter: str | None = None,
    concurrency: int = 8,
    on_done: Callable[[Trajectory], None] | None = None,
) -> list[Trajectory]:
    """Run many questions at once (so the backend batches them), at most ``concurrency`` in flight.

    Each item: {"question", optional "gold", "thread_id", "examples", "metadata"}.
    Results come back in input order.
    """
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(item: dict[str, Any]) -> Trajectory:
        async with gate:
            traj = await arun(
                graph, item["question"], graph_name=graph_name, model=model, adapter=adapter,
                thread_id=item.get("thread_id"), gold=item.get("gold"),
                examples=item.get("examples"), metadata=item.get("metadata"),
            )
        if on_done is not None:
            on_done(traj)
        return traj

    return list(await asyncio.gather(*(one(item) for item in items)))
