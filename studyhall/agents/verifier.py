"""The outcome verifier: judges a candidate solution — correct or incorrect, a score in
[0, 1], the first wrong step — and re-checks its arithmetic with the calculator tool.

A calculator-confirmed slip overrides the model's judgement (small models are poor
judges; arithmetic is checkable)."""

from __future__ import annotations

import re
import time
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from pydantic import BaseModel

from studyhall.agents.base import AgentOutput, ParseError, call_agent, messages
from studyhall.records import ToolCall
from studyhall.tools.calculator import check_arithmetic

SYSTEM = (
    "You are a strict math teacher checking a student's solution. Check every step's logic "
    "and arithmetic. Reply in exactly this form:\n"
    "Verdict: correct or incorrect\n"
    "Score: a number from 0 to 1 (how sure you are that the final answer is right)\n"
    "First wrong step: the step number, or none\n"
    "Reason: one short sentence"
)
REMINDER = "Reply with the four lines: Verdict: ..., Score: ..., First wrong step: ..., Reason: ..."


class Verdict(BaseModel):
    correct: bool
    score: float
    first_wrong_step: int | None = None
    reason: str = ""
    arithmetic_slips: list[dict[str, Any]] = []


def parse(text: str) -> Verdict:
    low = text.lower()
    m = re.search(r"verdict\s*[:\-]\s*\**\s*(in)?correct", low)
    if m:
        correct = m.group(1) is None
    elif re.search(r"\bincorrect\b|\bwrong\b|\bnot correct\b", low):
        correct = False
    elif re.search(r"\bcorrect\b|\bright\b", low):
        correct = True
    else:
        raise ParseError("no verdict (correct/incorrect) found")
    score_m = re.search(r"score\s*[:\-]\s*\**\s*([01](?:\.\d+)?|\.\d+)", low)
    score = float(score_m.group(1)) if score_m else (0.8 if correct else 0.2)
    score = min(1.0, max(0.0, score))
    step_m = re.search(r"first wrong step\s*[:\-]\s*\**\s*(?:step\s*)?(\d+)", low)
    reason_m = re.search(r"reason\s*[:\-]\s*(.+)", text, re.I)
    return Verdict(
        correct=correct, score=score, first_wrong_step=int(step_m.group(1)) if step_m else None,
        reason=reason_m.group(1).strip() if reason_m else "",
    )


def user_prompt(question: str, solution: str) -> str:
    return f"Problem: {question.strip()}\n\nStudent's solution:\n{solution.strip()}"


async def verify(
    model: BaseChatModel,
    question: str,
    solution: str,
    *,
    node: str = "verifier",
    use_calculator: bool = True,
    config: RunnableConfig | None = None,
    round: int = 0,
    **sampling: Any,
) -> AgentOutput[Verdict]:
    out = await call_agent(
        model, messages(SYSTEM, user_prompt(question, solution)), parse,
        role="verifier", node=node, config=config, reminder=REMINDER, round=round, **sampling,
    )
    if not use_calculator:
        return out
    started = time.perf_counter()
    slips = check_arithmetic(solution)
    out.step.tool_calls.append(ToolCall(
        tool="calculator", input=f"check {len(solution.splitlines())} lines",
        output="; ".join(f"line {s.line}: {s.expression} = {s.actual}, not {s.claimed}" for s in slips) or "all arithmetic checks out",
        seconds=time.perf_counter() - started,
    ))
    if slips:
        verdict = out.value or Verdict(correct=False, score=0.0)
        verdict = verdict.model_copy(update={
            "correct": False,
            "score": min(verdict.score, 0.1),
            "first_wrong_step": slips[0].line,
            "reason": f"arithmetic slip: {slips[0].expression} = {slips[0].actual}, not {slips[0].claimed}",
            "arithmetic_slips": [s.model_dump() for s in slips],
        })
        out.value = verdict
        out.step.parsed = verdict.model_dump(mode="json")
    return out
