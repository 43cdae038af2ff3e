"""``solve`` (LoRID): knowledge generator -> deep reasoner, beside an intuitive reasoner;
if their answers disagree the verifier picks one, or both retry, up to a round limit.

    START -> knowledge -> deep ----\\
    START -> intuitive ------------+-> compare -> END            (they agree)
                                        \\-> verify -> END        (verifier picks one, or rounds used up)
                                                \\-> retry -> deep + intuitive -> compare ...
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, StateGraph

from studyhall.agents import knowledge, student, verifier
from studyhall.graphs.common import BACKEND_RETRY, start_with_retrieval
from studyhall.graphs.state import GraphState
from studyhall.tools.answers import answers_match


class SolveState(GraphState, total=False):
    knowledge: str | None
    deep: dict[str, Any] | None  # {"answer", "solution"}
    intuitive: dict[str, Any] | None
    round: int
    feedback: str | None
    final_role: str


def build(
    model: BaseChatModel,
    *,
    checkpointer: Any = None,
    memory: Any = None,
    retrieve: int = 0,
    rounds: int = 2,
    max_tokens: int | None = None,
    retry_temperature: float = 0.7,
    system_prompt: str | None = None,
    **_: Any,
):
    """rounds: how many times the reasoners may try (1 = no retry)."""
    base: dict[str, Any] = {"max_tokens": max_tokens} if max_tokens else {}

    def sampling(state: SolveState) -> dict[str, Any]:
        r = state.get("round", 0)
        return base | ({"temperature": retry_temperature, "seed": 1000 + r} if r else {"temperature": 0.0})

    async def knowledge_node(state: SolveState, config: RunnableConfig) -> dict[str, Any]:
        out = await knowledge.generate(model, state["question"], examples=state.get("examples") or (),
                                       config=config, **base)
        text = out.value.as_text() if out.value else None
        return {"steps": [out.step.model_dump(mode="json")], "knowledge": text}

    def reasoner(name: str, with_knowledge: bool):
        async def node(state: SolveState, config: RunnableConfig) -> dict[str, Any]:
            out = await student.solve(
                model, state["question"], system=system_prompt or student.SYSTEM,
                knowledge=state.get("knowledge") if with_knowledge else None,
                examples=state.get("examples") or (), feedback=state.get("feedback"),
                history=state.get("history") or (), node=name, config=config, round=state.get("round", 0), **sampling(state),
            )
            value = {"answer": out.value.answer, "solution": out.value.reasoning} if out.value else \
                {"answer": None, "solution": out.step.completion}
            key = "deep" if with_knowledge else "intuitive"
            return {"steps": [out.step.model_dump(mode="json")], key: value}
        return node

    def compare(state: SolveState) -> dict[str, Any]:
        deep, intuitive = state.get("deep") or {}, state.get("intuitive") or {}
        if deep.get("answer") is not None and answers_match(deep["answer"], intuitive.get("answer")):
            return {"answer": deep["answer"], "solution": deep["solution"],
                    "confidence": max(0.5, 1.0 - 0.1 * state.get("round", 0)), "final_role": "agreement"}
        return {"answer": None}

    def after_compare(state: SolveState) -> Literal["verify", "__end__"]:
        return END if state.get("final_role") == "agreement" and state.get("answer") is not None else "verify"

    async def verify_node(state: SolveState, config: RunnableConfig) -> dict[str, Any]:
        r = state.get("round", 0)
        cands = {k: state.get(k) or {} for k in ("deep", "intuitive")}
        live = {k: c for k, c in cands.items() if c.get("answer") is not None}
        outs = await asyncio.gather(*(
            verifier.verify(model, state["question"], c["solution"], node=f"verifier:{k}", config=config,
                            round=r, **base)
            for k, c in live.items()
        ))
        steps = [o.step.model_dump(mode="json") for o in outs]
        verdicts = {k: o.value for k, o in zip(live, outs, strict=True)}
        scored = {k: (v.score if v else 0.5, bool(v and v.correct)) for k, v in verdicts.items()}
        accepted = [k for k, (_, ok) in scored.items() if ok]
        last_round = r + 1 >= rounds
        if len(accepted) == 1 or (last_round and scored):
            pick = accepted[0] if len(accepted) == 1 else max(scored, key=lambda k: scored[k][0])
            score = scored[pick][0]
            return {"steps": steps, "answer": live[pick]["answer"], "solution": live[pick]["solution"],
                    "confidence": round(score if len(accepted) == 1 else 0.5 * score, 3),
                    "final_role": f"verifier:{pick}"}
        if last_round:  # nothing parsed at all
            return {"steps": steps, "answer": None, "confidence": 0.0, "final_role": "none"}
        reasons = [f"{k}: {v.reason}" for k, v in verdicts.items() if v and v.reason]
        note = "Two attempts disagreed" + (" (" + "; ".join(reasons) + ")" if reasons else "") + ". Check each step carefully."
        return {"steps": steps, "feedback": note, "final_role": "retry"}

    def after_verify(state: SolveState) -> Literal["retry", "__end__"]:
        return "retry" if state.get("final_role") == "retry" else END

    def retry(state: SolveState) -> dict[str, Any]:
        return {"round": state.get("round", 0) + 1}

    graph = StateGraph(SolveState)
    graph.add_node("knowledge", knowledge_node, retry_policy=BACKEND_RETRY)
    graph.add_node("deep", reasoner("deep_reasoner", True), retry_policy=BACKEND_RETRY)
    graph.add_node("intuitive", reasoner("intuitive_reasoner", False), retry_policy=BACKEND_RETRY)
    graph.add_node("compare", compare)
    graph.add_node("verify", verify_node, retry_policy=BACKEND_RETRY)
    graph.add_node("retry", retry)
    start_with_retrieval(graph, ["knowledge", "intuitive"], memory, retrieve)
    graph.add_edge("knowledge", "deep")
    graph.add_edge(["deep", "intuitive"], "compare")
    graph.add_conditional_edges("compare", after_compare)
    graph.add_conditional_edges("verify", after_verify)
    graph.add_edge("retry", "deep")
    graph.add_edge("retry", "intuitive")
    return graph.compile(checkpointer=checkpointer, name="solve")
