"""Pieces every graph uses: the retry policy for backend failures."""

from __future__ import annotations

from typing import Any

from langgraph.graph import START, StateGraph
from langgraph.types import RetryPolicy


def is_transient(exc: Exception) -> bool:
    """Backend hiccups worth retrying: timeouts, refused connections, server errors."""
    from studyhall.errors import BackendError

    if isinstance(exc, BackendError | TimeoutError | ConnectionError):
        return True
    try:
        import httpx

        return isinstance(exc, httpx.TransportError)
    except ImportError:  # pragma: no cover
        return False


BACKEND_RETRY = RetryPolicy(max_attempts=3, initial_interval=0.5, backoff_factor=2.0, retry_on=is_transient)


def start_with_retrieval(graph: StateGraph, first: str | list[str], memory: Any = None, retrieve: int = 0) -> None:
    """Wire START to the graph's first node(s), through a ``retrieve`` node when asked.

    With ``retrieve=k`` the k most similar correctly solved problems from episodic memory
    become ``examples`` (worked examples for the student and knowledge generator), unless
    the caller already passed examples in.
    """
    targets = [first] if isinstance(first, str) else list(first)
    if retrieve <= 0:
        for target in targets:
            graph.add_edge(START, target)
        return
    if memory is None:
        from studyhall.errors import InputError

        raise InputError("retrieve needs an episodic memory", hint="pass memory=EpisodicMemory.open(settings)")

    async def retrieve_node(state: dict[str, Any]) -> dict[str, Any]:
        if state.get("examples"):
            return {}
        return {"examples": await memory.asimilar_solved(state["question"], retrieve)}

    graph.add_node("retrieve", retrieve_node, retry_policy=BACKEND_RETRY)
    graph.add_edge(START, "retrieve")
    for target in targets:
        graph.add_edge("retrieve", target)
