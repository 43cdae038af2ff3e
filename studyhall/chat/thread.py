"""A chat thread: one LangGraph graph, checkpointed in SQLite, that answers each new question
with a reasoning graph and keeps the conversation's turns in its state.

    START -> answer -> END         (answer runs the chosen reasoning graph as a subgraph)

Every question is a new run on the same thread id: the input sets ``question``, and the
``turns`` channel (append-only) keeps what came before, so a resumed thread still has its
history and a follow-up question can refer to earlier ones (the student sees the last few
questions and answers). A run stopped with Ctrl-C leaves an unfinished task behind; the next
question on the thread starts a fresh run and that task is dropped.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel, Field

from studyhall.records import Trajectory, new_id, utcnow

TURN_VERSION = 1
HISTORY_TURNS = 3  # earlier turns the student sees
HISTORY_CHARS = 1500  # each earlier question is cut to this many characters in the prompt


class Turn(BaseModel):
    """One question and its answer, as kept in the thread's state (small: the full
    trajectory lives in the trajectory store under ``trajectory_id``)."""

    version: int = TURN_VERSION
    question: str
    answer: str | None = None
    solution: str | None = Field(None, description="The final reasoning, cut to 2,000 characters.")
    confidence: float | None = None
    graph: str
    model: str
    adapter: str | None = None
    trajectory_id: str
    tokens: int = 0
    seconds: float = 0.0
    created_at: str = Field(default_factory=lambda: utcnow().isoformat())


class ChatState(TypedDict, total=False):
    question: str
    turns: Annotated[list[dict[str, Any]], operator.add]


def history_for_prompt(turns: list[dict[str, Any]], limit: int = HISTORY_TURNS) -> list[dict[str, Any]]:
    """The last ``limit`` turns as the student's ``history`` (question, answer)."""
    out = []
    for t in turns[-limit:] if limit else []:
        q = t["question"]
        if len(q) > HISTORY_CHARS:
            q = q[:HISTORY_CHARS] + " ..."
        out.append({"question": q, "answer": t.get("answer")})
    return out


def build_thread_graph(
    inner: Any,
    *,
    graph_name: str,
    model_name: str,
    adapter: str | None = None,
    checkpointer: Any,
    on_trajectory: Callable[[Trajectory], None] | None = None,
) -> Any:
    """The chat graph over a compiled reasoning graph (built with ``checkpointer=False``: a
    turn is checkpointed as a whole, its inner steps live in its trajectory)."""
    from studyhall.graphs.runner import trajectory_from_state

    async def answer(state: ChatState, config: RunnableConfig) -> dict[str, Any]:
        question = state["question"]
        thread_id = str(config["configurable"]["thread_id"])
        started = time.perf_counter()
        inputs = {"question": question, "steps": [], "history": history_for_prompt(state.get("turns") or [])}
        values = await inner.ainvoke(inputs, config)
        seconds = time.perf_counter() - started
        traj = trajectory_from_state(
            values, question=question, graph=graph_name, model=model_name, thread_id=thread_id,
            adapter=adapter, seconds=seconds, metadata={"source": "chat"},
        ).model_copy(update={"id": new_id()})
        if on_trajectory is not None:
            on_trajectory(traj)
        solution = traj.solution[:2000] if traj.solution else None
        turn = Turn(question=question, answer=traj.final_answer, solution=solution, confidence=traj.confidence,
                    graph=graph_name, model=model_name, adapter=adapter, trajectory_id=traj.id,
                    tokens=traj.total_tokens, seconds=round(seconds, 3))
        return {"turns": [turn.model_dump(mode="json")]}

    graph = StateGraph(ChatState)
    graph.add_node("answer", answer)
    graph.add_edge(START, "answer")
    graph.add_edge("answer", END)
    return graph.compile(checkpointer=checkpointer, name="chat")


def new_thread_id() -> str:
    """Short and typeable: ``chat --thread 3f9a2c1b``."""
    return new_id()[:8]


def chat_db(home: Path) -> Path:
    """Chat threads have their own database, so ``/thread list`` shows only conversations."""
    return home / "chat.sqlite"


async def thread_turns(graph: Any, thread_id: str) -> list[Turn]:
    """The turns saved for a thread (empty when it has none), read through a compiled chat graph."""
    state = await graph.aget_state({"configurable": {"thread_id": thread_id}})
    return [Turn.model_validate(t) for t in state.values.get("turns") or []]
