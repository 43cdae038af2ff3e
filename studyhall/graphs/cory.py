"""``cory`` (CORY): the pioneer answers; the observer answers after reading the pioneer's
answer and may agree or correct it. Both answers and the final one are recorded.

    START -> pioneer -> observer -> END

Each role can run on its own LoRA adapter (``pioneer_adapter``, ``observer_adapter``, bound
per call); ``swap_roles=True`` exchanges them — CORY's role swap, made by config.
"""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph

from studyhall.agents import observer, pioneer
from studyhall.graphs.common import BACKEND_RETRY
from studyhall.graphs.state import GraphState


class CoryState(GraphState, total=False):
    pioneer: dict[str, Any] | None
    observer: dict[str, Any] | None
    final_role: str


def build(
    model: BaseChatModel,
    *,
    checkpointer: Any = None,
    pioneer_adapter: str | None = None,
    observer_adapter: str | None = None,
    swap_roles: bool = False,
    max_tokens: int | None = None,
    temperature: float = 0.0,
    **_: Any,
):
    if swap_roles:
        pioneer_adapter, observer_adapter = observer_adapter, pioneer_adapter
    base: dict[str, Any] = {"temperature": temperature} | ({"max_tokens": max_tokens} if max_tokens else {})
    pioneer_opts = base | ({"adapter": pioneer_adapter} if pioneer_adapter else {})
    observer_opts = base | ({"adapter": observer_adapter} if observer_adapter else {})

    async def pioneer_node(state: CoryState, config: RunnableConfig) -> dict[str, Any]:
        out = await pioneer.answer(model, state["question"], config=config, **pioneer_opts)
        value = {"answer": out.value.answer if out.value else None, "solution": out.step.completion,
                 "adapter": pioneer_adapter}
        return {"steps": [out.step.model_dump(mode="json")], "pioneer": value}

    async def observer_node(state: CoryState, config: RunnableConfig) -> dict[str, Any]:
        first = state.get("pioneer") or {}
        out = await observer.answer(model, state["question"], first.get("solution", ""), first.get("answer"),
                                    config=config, **observer_opts)
        value = {"answer": out.value.answer if out.value else None, "solution": out.step.completion,
                 "agrees": out.value.agrees if out.value else None, "adapter": observer_adapter}
        update: dict[str, Any] = {"steps": [out.step.model_dump(mode="json")], "observer": value}
        if out.value is not None:
            update |= {"answer": out.value.answer, "solution": out.value.reasoning, "final_role": "observer",
                       "confidence": 1.0 if out.value.agrees else 0.5}
        else:  # the observer's reply was unusable: keep the pioneer's answer
            update |= {"answer": first.get("answer"), "solution": first.get("solution"), "final_role": "pioneer",
                       "confidence": 0.5 if first.get("answer") is not None else 0.0}
        return update

    graph = StateGraph(CoryState)
    graph.add_node("pioneer", pioneer_node, retry_policy=BACKEND_RETRY)
    graph.add_node("observer", observer_node, retry_policy=BACKEND_RETRY)
    graph.add_edge(START, "pioneer")
    graph.add_edge("pioneer", "observer")
    graph.add_edge("observer", END)
    return graph.compile(checkpointer=checkpointer, name="cory")
