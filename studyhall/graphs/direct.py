"""``direct``: one student pass, the baseline every other graph is compared with.

    START -> student -> END
"""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, StateGraph

from studyhall.agents import student
from studyhall.graphs.common import BACKEND_RETRY, start_with_retrieval
from studyhall.graphs.state import GraphState


def build(
    model: BaseChatModel,
    *,
    checkpointer: Any = None,
    memory: Any = None,
    retrieve: int = 0,
    max_tokens: int | None = None,
    system_prompt: str | None = None,
    temperature: float = 0.0,
    **_: Any,
):
    sampling: dict[str, Any] = {"temperature": temperature}
    if max_tokens:
        sampling["max_tokens"] = max_tokens

    async def student_node(state: GraphState, config: RunnableConfig) -> dict[str, Any]:
        out = await student.solve(
            model,
            state["question"],
            system=system_prompt or student.SYSTEM,
            examples=state.get("examples") or (),
            history=state.get("history") or (),
            config=config,
            **sampling,
        )
        update: dict[str, Any] = {"steps": [out.step.model_dump(mode="json")]}
        if out.value is not None:
            update |= {"answer": out.value.answer, "solution": out.value.reasoning, "confidence": None}
        else:
            update |= {"answer": None, "solution": out.step.completion}
        return update

    graph = StateGraph(GraphState)
    graph.add_node("student", student_node, retry_policy=BACKEND_RETRY)
    start_with_retrieval(graph, "student", memory, retrieve)
    graph.add_edge("student", END)
    return graph.compile(checkpointer=checkpointer, name="direct")
