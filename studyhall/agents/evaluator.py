"""The evaluator (PE2 / EduPlanner, GEPA's metric contract): scores a system prompt on a
dev batch and returns the score plus textual feedback on each failure.

Contract: ``Evaluation.score`` is the accuracy in [0, 1]; ``Evaluation.failures`` holds, for
each wrong answer (up to a cap), the problem, gold, prediction and one or two sentences of
feedback on what went wrong — what the optimizer needs to rewrite the prompt.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from pydantic import BaseModel

from studyhall.agents import student
from studyhall.agents.base import AgentOutput, ParseError, call_agent, messages
from studyhall.records import AgentStep
from studyhall.tools.answers import answers_match

SYSTEM = (
    "You review how a math student followed an instruction. The student answered the problem "
    "below wrongly. In one or two sentences, say what went wrong in the student's reasoning "
    "and what the instruction should tell the student to avoid it. Start with 'Feedback:'."
)


class FailureFeedback(BaseModel):
    question: str
    gold: str
    prediction: str | None
    feedback: str


class Evaluation(BaseModel):
    version: int = 1
    prompt: str
    score: float
    correct: int
    total: int
    failures: list[FailureFeedback] = []


def parse_feedback(text: str) -> str:
    body = text.split("Feedback:", 1)[-1].strip()
    if not body:
        raise ParseError("empty feedback")
    return body[:600]


async def feedback_on(
    model: BaseChatModel, prompt: str, problem: dict[str, Any], attempt: str, *,
    config: RunnableConfig | None = None, **sampling: Any,
) -> AgentOutput[str]:
    user = (
        f"Instruction given to the student:\n{prompt}\n\nProblem: {problem['question']}\n"
        f"Correct answer: {problem['answer']}\n\nStudent's answer:\n{attempt.strip()}"
    )
    return await call_agent(model, messages(SYSTEM, user), parse_feedback, role="evaluator",
                            node="evaluator", config=config, **sampling)


async def evaluate(
    model: BaseChatModel,
    prompt: str,
    dev: Sequence[dict[str, Any]],
    *,
    max_feedback: int = 4,
    config: RunnableConfig | None = None,
    student_sampling: dict[str, Any] | None = None,
    **sampling: Any,
) -> tuple[Evaluation, list[AgentStep]]:
    """Run the student with ``prompt`` on every dev problem (concurrently, so the backend
    batches), score it, and ask for feedback on up to ``max_feedback`` failures."""
    attempts = await asyncio.gather(*(
        student.solve(model, p["question"], system=prompt, node="evaluator:student", config=config,
                      **(student_sampling or {}))
        for p in dev
    ))
    steps = [a.step for a in attempts]
    failures = []
    for p, a in zip(dev, attempts, strict=True):
        predicted = a.value.answer if a.value else None
        if not answers_match(predicted, p["answer"]):
            failures.append((p, a, predicted))
    notes = await asyncio.gather(*(
        feedback_on(model, prompt, p, a.step.completion, config=config, **sampling)
        for p, a, _ in failures[:max_feedback]
    ))
    steps += [n.step for n in notes]
    feedback = [
        FailureFeedback(question=p["question"], gold=str(p["answer"]), prediction=pred,
                        feedback=n.value or "(no feedback)")
        for (p, _a, pred), n in zip(failures[:max_feedback], notes, strict=True)
    ]
    correct = len(dev) - len(failures)
    evaluation = Evaluation(prompt=prompt, score=correct / max(1, len(dev)), correct=correct,
                            total=len(dev), failures=feedback)
    return evaluation, steps
