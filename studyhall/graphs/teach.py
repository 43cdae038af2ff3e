"""``teach`` (LLM2LLM): run the student on a batch, collect its wrong answers, have the
teacher write new problems from each, keep only those whose answers check out, and return
the augmented set.

    START -> student -> teacher -> check -> END

Input: ``batch`` (problems with question and answer) or a single question (+ gold). Without a
gold answer the verifier judges the student. A teacher-written problem is kept only when an
independent re-solve (the ``code`` graph's Python solver, or the student) reaches the
teacher's answer, and it is not a duplicate (of the batch, of another new problem, or —
with ``dedupe`` — of memory).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph

from studyhall.agents import student, teacher, verifier
from studyhall.graphs.common import BACKEND_RETRY
from studyhall.graphs.state import GraphState
from studyhall.tools.answers import answers_match


class TeachState(GraphState, total=False):
    batch: list[dict[str, Any]]
    attempts: list[dict[str, Any]]
    candidates: list[dict[str, Any]]
    new_problems: list[dict[str, Any]]
    rejected: list[dict[str, Any]]


def _key(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


def build(
    model: BaseChatModel,
    *,
    checkpointer: Any = None,
    per_problem: int = 2,
    check: Literal["code", "student"] = "code",
    dedupe: Callable[[list[str]], list[int]] | None = None,
    max_tokens: int | None = None,
    **_: Any,
):
    """per_problem: new problems asked for each wrong answer; check: how answers are
    re-derived; dedupe: returns the indices of questions to keep (e.g. memory's
    drop_near_duplicates)."""
    base: dict[str, Any] = {"max_tokens": max_tokens} if max_tokens else {}

    async def student_node(state: TeachState, config: RunnableConfig) -> dict[str, Any]:
        batch = state.get("batch") or [{"question": state["question"], "answer": state.get("gold")}]
        outs = await asyncio.gather(*(student.solve(model, p["question"], config=config, **base) for p in batch))
        steps = [o.step.model_dump(mode="json") for o in outs]
        attempts = []
        judged = []
        for p, o in zip(batch, outs, strict=True):
            predicted = o.value.answer if o.value else None
            if p.get("answer") is not None:
                attempts.append({"question": p["question"], "predicted": predicted,
                                 "correct": answers_match(predicted, p["answer"])})
            else:
                judged.append((len(attempts), p, o))
                attempts.append({"question": p["question"], "predicted": predicted, "correct": None})
        verdicts = await asyncio.gather(*(
            verifier.verify(model, p["question"], o.step.completion, config=config, **base) for _, p, o in judged
        ))
        for (i, _p, _o), v in zip(judged, verdicts, strict=True):
            steps.append(v.step.model_dump(mode="json"))
            attempts[i]["correct"] = bool(v.value and v.value.correct)
        first = outs[0].value
        return {"steps": steps, "batch": batch, "attempts": attempts,
                "answer": first.answer if first else None, "solution": first.reasoning if first else None}

    def after_student(state: TeachState) -> Literal["teacher", "__end__"]:
        return "teacher" if any(not a["correct"] for a in state.get("attempts") or []) else END

    async def teacher_node(state: TeachState, config: RunnableConfig) -> dict[str, Any]:
        wrong = [(p, a) for p, a in zip(state["batch"], state["attempts"], strict=True) if not a["correct"]]
        outs = await asyncio.gather(*(
            teacher.teach(model, p["question"], gold=p.get("answer"), gold_solution=p.get("solution"),
                          student_answer=a["predicted"], n=per_problem, config=config, **base)
            for p, a in wrong
        ))
        candidates = [
            {**np.model_dump(), "source": p["question"]}
            for (p, _), o in zip(wrong, outs, strict=True) if o.value for np in o.value.problems
        ]
        return {"steps": [o.step.model_dump(mode="json") for o in outs], "candidates": candidates}

    async def resolve(question: str, config: RunnableConfig) -> tuple[str | None, list[dict[str, Any]]]:
        if check == "code":
            from studyhall.graphs.code import solve_with_code

            answer, steps = await solve_with_code(model, question, config=config, **base)
            return answer, [s.model_dump(mode="json") for s in steps]
        out = await student.solve(model, question, node="check", config=config, **base)
        return (out.value.answer if out.value else None), [out.step.model_dump(mode="json")]

    async def check_node(state: TeachState, config: RunnableConfig) -> dict[str, Any]:
        seen = {_key(p["question"]) for p in state.get("batch") or []}
        unique, rejected = [], []
        for c in state.get("candidates") or []:
            k = _key(c["question"])
            if k in seen:
                rejected.append({**c, "reason": "duplicate"})
            else:
                seen.add(k)
                unique.append(c)
        if dedupe is not None and unique:
            keep = set(await asyncio.to_thread(dedupe, [c["question"] for c in unique]))
            rejected += [{**c, "reason": "near-duplicate of memory"} for i, c in enumerate(unique) if i not in keep]
            unique = [c for i, c in enumerate(unique) if i in keep]
        results = await asyncio.gather(*(resolve(c["question"], config) for c in unique))
        steps, kept = [], []
        for c, (answer, s) in zip(unique, results, strict=True):
            steps += s
            if answers_match(answer, c["answer"]):
                kept.append({**c, "checked_by": check})
            else:
                rejected.append({**c, "reason": f"re-solved to {answer}, teacher said {c['answer']}"})
        return {"steps": steps, "new_problems": kept, "rejected": rejected}

    graph = StateGraph(TeachState)
    graph.add_node("student", student_node, retry_policy=BACKEND_RETRY)
    graph.add_node("teacher", teacher_node, retry_policy=BACKEND_RETRY)
    graph.add_node("check", check_node, retry_policy=BACKEND_RETRY)
    graph.add_edge(START, "student")
    graph.add_conditional_edges("student", after_student)
    graph.add_edge("teacher", "check")
    graph.add_edge("check", END)
    return graph.compile(checkpointer=checkpointer, name="teach")
