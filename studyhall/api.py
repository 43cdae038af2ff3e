"""The Python API: load a model, build a graph, solve questions.

    import studyhall
    traj = studyhall.solve("Natalia sold 48 clips ...", graph="direct")
    graph = studyhall.build_graph("direct", model="packaged:smollm2-135m-instruct")
    trajs = await studyhall.asolve_many(questions, graph="direct", concurrency=16)
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel

from studyhall.config import Settings, load_settings
from studyhall.graphs.registry import build_graph as _build
from studyhall.graphs.runner import arun, arun_many, model_name
from studyhall.records import Trajectory


def load_model(spec: str | None = None, settings: Settings | None = None, **options: Any) -> BaseChatModel:
    """A chat model for a spec string (default: the configured model)."""
    from studyhall.serving.loader import load_chat_model

    return load_chat_model(spec, settings, **options)


def _model(model: str | BaseChatModel | None, settings: Settings) -> BaseChatModel:
    if model is None or isinstance(model, str):
        return load_model(model, settings)
    return model


def build_graph(
    name: str,
    model: str | BaseChatModel | None = None,
    *,
    checkpointer: Any = "sqlite",
    settings: Settings | None = None,
    **options: Any,
) -> Any:
    """A compiled LangGraph graph. ``checkpointer``: "sqlite" (the configured database),
    None (no persistence), or any LangGraph checkpoint saver. ``retrieve=k`` (direct, solve,
    vote) gives the agents the k most similar correctly solved problems from episodic memory
    (the configured one unless ``memory=`` is passed)."""
    settings = settings or load_settings()
    if options.get("retrieve") and options.get("memory") is None:
        from studyhall.memory.store import EpisodicMemory

        options["memory"] = EpisodicMemory.open(settings)
    if checkpointer == "sqlite":
        from studyhall.graphs.checkpoint import open_checkpointer

        checkpointer = open_checkpointer(settings.checkpoint_db)
    return _build(name, _model(model, settings), checkpointer=checkpointer, **options)


async def asolve(
    question: str,
    graph: str = "direct",
    model: str | BaseChatModel | None = None,
    *,
    gold: str | None = None,
    thread_id: str | None = None,
    settings: Settings | None = None,
    on_update: Any = None,
    record: bool = True,
    **options: Any,
) -> Trajectory:
    """Solve one question; the Trajectory is also kept in the trajectory store unless
    ``record=False``."""
    settings = settings or load_settings()
    chat = _model(model, settings)
    compiled = build_graph(graph, chat, settings=settings, **options)
    try:
        traj = await arun(
            compiled, question, graph_name=graph, model=model_name(chat), adapter=adapter_name(chat), gold=gold,
            thread_id=thread_id, on_update=on_update,
        )
    finally:
        _close(compiled)
    if record:
        _record([traj], settings)
    return traj


def solve(question: str, graph: str = "direct", model: str | BaseChatModel | None = None, **kw: Any) -> Trajectory:
    """Solve one question with a graph; returns the full Trajectory."""
    return asyncio.run(asolve(question, graph, model, **kw))


async def asolve_many(
    questions: Sequence[str | dict[str, Any]],
    graph: str = "direct",
    model: str | BaseChatModel | None = None,
    *,
    concurrency: int = 8,
    settings: Settings | None = None,
    record: bool = True,
    **options: Any,
) -> list[Trajectory]:
    """Many questions at once; the backend batches them. Items may be dicts with "gold"."""
    settings = settings or load_settings()
    chat = _model(model, settings)
    compiled = build_graph(graph, chat, settings=settings, **options)
    items = [q if isinstance(q, dict) else {"question": q} for q in questions]
    try:
        trajs = await arun_many(compiled, items, graph_name=graph, model=model_name(chat), adapter=adapter_name(chat),
                                concurrency=concurrency)
    finally:
        _close(compiled)
    if record:
        _record(trajs, settings)
    return trajs


def adapter_name(chat: BaseChatModel) -> str | None:
    """The adapter a chat model serves by default (recorded in each Trajectory)."""
    from studyhall.agents.base import unbind

    base, bound = unbind(chat)
    return bound.get("adapter", getattr(base, "adapter", None))


def _record(trajs: list[Trajectory], settings: Settings) -> None:
    from studyhall.memory.trajectory_store import TrajectoryStore

    with TrajectoryStore(settings.trajectory_db) as store:
        store.put(trajs)


def _close(compiled: Any) -> None:
    saver = getattr(compiled, "checkpointer", None)
    if saver is not None and hasattr(saver, "close"):
        saver.close()
