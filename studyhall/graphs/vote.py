"""``vote``: self-consistency over k samples, with adaptive sampling (stop as soon as the
answer is settled, so easy problems cost fewer tokens) and verifier-weighted voting.

    START -> sample -> (settled?) -> verify -> decide -> END
                 ^---------| no                 (verify only when samples disagree)

Settled: the first ``first`` samples all agree, or the leading answer is ahead of the
runner-up by more than the samples left to draw (it can no longer lose).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, StateGraph

from studyhall.agents import student, verifier
from studyhall.graphs.common import BACKEND_RETRY, start_with_retrieval
from studyhall.graphs.state import GraphState
from studyhall.tools.answers import normalize_number


class VoteState(GraphState, total=False):
    samples: list[str | None]  # each sample's answer (None: unparseable), in draw order
    solutions: list[str]
    votes: dict[str, float]
    scores: dict[str, float]  # verifier score per distinct answer


def tally(answers: list[str | None]) -> Counter[str]:
    return Counter(a for a in (normalize_number(x) for x in answers) if a is not None)


def settled(answers: list[str | None], k: int, first: int) -> bool:
    drawn = len(answers)
    if drawn >= k:
        return True
    counts = tally(answers).most_common(2)
    if not counts:
        return False
    lead = counts[0][1]
    runner_up = counts[1][1] if len(counts) > 1 else 0
    if drawn >= first and lead == drawn:  # unanimous so far
        return True
    return lead > runner_up + (k - drawn)


def build(
    model: BaseChatModel,
    *,
    checkpointer: Any = None,
    memory: Any = None,
    retrieve: int = 0,
    k: int = 8,
    first: int = 3,
    step: int = 2,
    temperature: float = 0.7,
    verify: bool = True,
    adaptive: bool = True,
    seed: int = 0,
    max_tokens: int | None = None,
    system_prompt: str | None = None,
    **_: Any,
):
    """k: most samples; first: initial batch (and the unanimity needed to stop early);
    step: samples per later batch; adaptive=False always draws k."""
    base: dict[str, Any] = {"max_tokens": max_tokens} if max_tokens else {}
    first = min(first, k)

    async def sample(state: VoteState, config: RunnableConfig) -> dict[str, Any]:
        drawn = len(state.get("samples") or [])
        n = (first if drawn == 0 else step) if adaptive else k
        n = min(n, k - drawn)
        outs = await student.solve_samples(
            model, state["question"], n=n, system=system_prompt or student.SYSTEM,
            examples=state.get("examples") or (), node="student", config=config, first_sample=drawn,
            temperature=temperature, seed=seed + drawn, **base,
        )
        return {
            "steps": [o.step.model_dump(mode="json") for o in outs],
            "samples": (state.get("samples") or []) + [o.value.answer if o.value else None for o in outs],
            "solutions": (state.get("solutions") or []) + [o.step.completion for o in outs],
        }

    def after_sample(state: VoteState) -> Literal["sample", "verify", "decide"]:
        answers = state.get("samples") or []
        if not (settled(answers, k, first) if adaptive else len(answers) >= k):
            return "sample"
        return "verify" if verify and len(tally(answers)) > 1 else "decide"

    async def verify_node(state: VoteState, config: RunnableConfig) -> dict[str, Any]:
        answers, solutions = state.get("samples") or [], state.get("solutions") or []
        representative: dict[str, str] = {}
        for a, s in zip(answers, solutions, strict=True):
            norm = normalize_number(a)
            if norm is not None and norm not in representative:
                representative[norm] = s
        outs = await asyncio.gather(*(
            verifier.verify(model, state["question"], sol, node="verifier", config=config, **base)
            for sol in representative.values()
        ))
        scores = {a: (o.value.score if o.value else 0.5) for a, o in zip(representative, outs, strict=True)}
        return {"steps": [o.step.model_dump(mode="json") for o in outs], "scores": scores}

    def decide(state: VoteState) -> dict[str, Any]:
        answers, solutions = state.get("samples") or [], state.get("solutions") or []
        counts = tally(answers)
        if not counts:
            return {"answer": None, "confidence": 0.0, "votes": {}}
        scores = state.get("scores") or {}
        # Verifier-weighted: each sample votes with its answer's verifier score (plain votes without).
        votes = {a: c * scores.get(a, 1.0) for a, c in counts.items()}
        total = sum(votes.values()) or 1.0
        best = max(votes, key=lambda a: (votes[a], counts[a]))
        solution = next(s for a, s in zip(answers, solutions, strict=True) if normalize_number(a) == best)
        return {"answer": best, "solution": solution, "votes": votes,
                "confidence": round(votes[best] / total, 3) if total else 0.0}

    graph = StateGraph(VoteState)
    graph.add_node("sample", sample, retry_policy=BACKEND_RETRY)
    graph.add_node("verify", verify_node, retry_policy=BACKEND_RETRY)
    graph.add_node("decide", decide)
    start_with_retrieval(graph, "sample", memory, retrieve)
    graph.add_conditional_edges("sample", after_sample)
    graph.add_edge("verify", "decide")
    graph.add_edge("decide", END)
    return graph.compile(checkpointer=checkpointer, name="vote")
