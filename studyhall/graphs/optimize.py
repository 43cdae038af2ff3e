"""``optimize`` (PE2 / EduPlanner): the evaluator scores the student's system prompt on a dev
batch with feedback on each failure; the optimizer proposes rewrites; a score-sorted queue
of candidates is expanded best-first until the evaluation budget is spent. Returns the best
prompt and the score history, then answers the question (if any) with the best prompt.

    START -> seed -> expand -> (budget left?) -> expand ... -> finish -> END
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph

from studyhall.agents import evaluator, optimizer, student
from studyhall.agents.evaluator import Evaluation
from studyhall.graphs.common import BACKEND_RETRY
from studyhall.graphs.state import GraphState


class OptimizeState(GraphState, total=False):
    dev: list[dict[str, Any]]
    candidates: list[dict[str, Any]]  # {prompt, score, evaluation, expanded, parent, iteration}
    history: list[dict[str, Any]]  # {iteration, prompt, score}: every evaluated prompt, in order
    evaluations: int
    iteration: int
    best_prompt: str
    best_score: float


def default_dev(size: int, seed: int = 0) -> list[dict[str, Any]]:
    """A dev batch from GSM8K train (never the test split)."""
    from studyhall.evals.datasets import load_gsm8k, subset

    return [{"question": p.question, "answer": p.answer} for p in subset(load_gsm8k(None, "train").problems, size, seed)]


def build(
    model: BaseChatModel,
    *,
    checkpointer: Any = None,
    dev: Sequence[dict[str, Any]] | None = None,
    dev_size: int = 8,
    budget: int = 5,
    proposals: int = 2,
    initial_prompt: str | None = None,
    max_feedback: int = 3,
    max_tokens: int | None = None,
    **_: Any,
):
    """budget: prompts evaluated in all (the initial one included); proposals: rewrites per
    expansion."""
    base: dict[str, Any] = {"max_tokens": max_tokens} if max_tokens else {}
    start_prompt = initial_prompt or student.SYSTEM

    async def scored(prompt: str, dev_set: list[dict[str, Any]], config: RunnableConfig):
        return await evaluator.evaluate(model, prompt, dev_set, max_feedback=max_feedback, config=config,
                                        student_sampling=base, **base)

    async def seed(state: OptimizeState, config: RunnableConfig) -> dict[str, Any]:
        dev_set = list(state.get("dev") or dev or await asyncio.to_thread(default_dev, dev_size))
        ev, steps = await scored(start_prompt, dev_set, config)
        cand = {"prompt": start_prompt, "score": ev.score, "evaluation": ev.model_dump(), "expanded": False,
                "parent": None, "iteration": 0}
        return {"steps": [s.model_dump(mode="json") for s in steps], "dev": dev_set, "candidates": [cand],
                "history": [{"iteration": 0, "prompt": start_prompt, "score": ev.score}],
                "evaluations": 1, "iteration": 0}

    async def expand(state: OptimizeState, config: RunnableConfig) -> dict[str, Any]:
        cands = [dict(c) for c in state["candidates"]]
        open_ = [i for i, c in enumerate(cands) if not c["expanded"]]
        parent = max(open_, key=lambda i: (cands[i]["score"], -i))  # best-first
        cands[parent]["expanded"] = True
        iteration = state.get("iteration", 0) + 1
        room = min(proposals, budget - state.get("evaluations", 0))
        outs = await optimizer.propose(model, Evaluation.model_validate(cands[parent]["evaluation"]), n=room,
                                       config=config, round=iteration, seed=iteration, **base)
        steps = [o.step.model_dump(mode="json") for o in outs]
        known = {c["prompt"] for c in cands}
        new_prompts = list(dict.fromkeys(o.value for o in outs if o.value and o.value not in known))
        results = await asyncio.gather(*(scored(p, state["dev"], config) for p in new_prompts))
        history = list(state.get("history") or [])
        for prompt, (ev, s) in zip(new_prompts, results, strict=True):
            steps += [x.model_dump(mode="json") for x in s]
            cands.append({"prompt": prompt, "score": ev.score, "evaluation": ev.model_dump(), "expanded": False,
                          "parent": parent, "iteration": iteration})
            history.append({"iteration": iteration, "prompt": prompt, "score": ev.score})
        # Proposals that failed to parse still used budget: count the optimizer's attempts.
        return {"steps": steps, "candidates": cands, "history": history, "iteration": iteration,
                "evaluations": state.get("evaluations", 0) + max(1, room)}

    def after(state: OptimizeState) -> Literal["expand", "finish"]:
        open_ = any(not c["expanded"] for c in state["candidates"])
        return "expand" if open_ and state.get("evaluations", 0) < budget else "finish"

    async def finish(state: OptimizeState, config: RunnableConfig) -> dict[str, Any]:
        best = max(state["candidates"], key=lambda c: (c["score"], -c["iteration"]))
        update: dict[str, Any] = {"best_prompt": best["prompt"], "best_score": best["score"]}
        question = (state.get("question") or "").strip()
        if question:
            out = await student.solve(model, question, system=best["prompt"], node="student", config=config, **base)
            update |= {"steps": [out.step.model_dump(mode="json")],
                       "answer": out.value.answer if out.value else None,
                       "solution": out.value.reasoning if out.value else out.step.completion,
                       "confidence": best["score"]}
        return update

    graph = StateGraph(OptimizeState)
    graph.add_node("seed", seed, retry_policy=BACKEND_RETRY)
    graph.add_node("expand", expand, retry_policy=BACKEND_RETRY)
    graph.add_node("finish", finish, retry_policy=BACKEND_RETRY)
    graph.add_edge(START, "seed")
    graph.add_conditional_edges("seed", after)
    graph.add_conditional_edges("expand", after)
    graph.add_edge("finish", END)
    return graph.compile(checkpointer=checkpointer, name="optimize")
