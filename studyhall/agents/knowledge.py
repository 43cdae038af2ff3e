"""The knowledge generator (LoRID): states the facts, formulas and sub-goals a problem
needs, without solving it. Its notes feed the deep reasoner."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from pydantic import BaseModel

from studyhall.agents.base import AgentOutput, ParseError, call_agent, messages

SYSTEM = (
    "You are a math teacher preparing hints for a student. For the problem, list the known "
    "quantities, the facts or formulas needed, and the sub-goals in order, as short bullet "
    "points starting with '- '. Do not solve the problem and do not give the final answer."
)
REMINDER = "Give only short bullet points starting with '- ' (facts, formulas, sub-goals). Do not solve it."
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+(.*\S)")


class Knowledge(BaseModel):
    points: list[str]

    def as_text(self) -> str:
        return "\n".join(f"- {p}" for p in self.points)


def parse(text: str) -> Knowledge:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    points = [m.group(1) for ln in lines if (m := _BULLET.match(ln))]
    if not points:  # tolerate plain sentences
        points = [ln.strip() for ln in lines[:8]]
    # Hints must not leak a final answer into the deep reasoner's prompt.
    points = [p for p in points if not re.match(r"(?i)\**\s*(final\s+)?answer\b", p)]
    if not points:
        raise ParseError("no facts or sub-goals found")
    return Knowledge(points=points[:12])


def user_prompt(question: str, examples: Sequence[dict[str, Any]] = ()) -> str:
    parts = [f"Similar solved problem:\n{ex['question']}\nSolution: {ex['solution']}\n" for ex in examples]
    parts.append(f"Problem: {question.strip()}")
    return "\n".join(parts)


async def generate(
    model: BaseChatModel,
    question: str,
    *,
    examples: Sequence[dict[str, Any]] = (),
    config: RunnableConfig | None = None,
    round: int = 0,
    **sampling: Any,
) -> AgentOutput[Knowledge]:
    return await call_agent(
        model, messages(SYSTEM, user_prompt(question, examples)), parse,
        role="knowledge", node="knowledge", config=config, reminder=REMINDER, round=round, **sampling,
    )
