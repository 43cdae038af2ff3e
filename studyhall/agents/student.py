"""The student: solves a problem with short explicit steps and ends with ``Answer: N``.

It can be given facts from the knowledge generator (LoRID's deep reasoner) and worked
examples of similar solved problems (retrieval from episodic memory).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from pydantic import BaseModel

from studyhall.agents.base import AgentOutput, ParseError, call_agent, messages, sample_agent
from studyhall.tools.answers import extract_marked, last_number

SYSTEM = (
    "You are a careful math student. Solve the problem step by step. "
    "Keep each step short and write every calculation out, like 3 * 4 = 12. "
    "Do not repeat the question. "
    "End with a final line of the form: Answer: <number>"
)
REMINDER = "Finish with one final line of the form: Answer: <number>"


class StudentAnswer(BaseModel):
    reasoning: str
    answer: str
    marked: bool  # True when the answer came from an explicit "Answer:" line


def parse(text: str) -> StudentAnswer:
    marked = extract_marked(text)
    answer = marked or last_number(text)
    if answer is None:
        raise ParseError("no numeric answer found")
    return StudentAnswer(reasoning=text.strip(), answer=answer, marked=marked is not None)


def user_prompt(
    question: str,
    *,
    knowledge: str | None = None,
    examples: Sequence[dict[str, Any]] = (),
    feedback: str | None = None,
    history: Sequence[dict[str, Any]] = (),
) -> str:
    """``history``: earlier questions and answers of a conversation (chat), so a follow-up
    question can refer to them."""
    parts = []
    for i, ex in enumerate(examples, 1):
        parts.append(f"Example {i}:\nProblem: {ex['question']}\nSolution: {ex['solution']}\nAnswer: {ex['answer']}\n")
    if knowledge:
        parts.append(f"Useful facts and sub-goals:\n{knowledge.strip()}\n")
    if feedback:
        parts.append(f"A reviewer's note on an earlier attempt:\n{feedback.strip()}\n")
    if history:
        earlier = [f"Problem: {t['question'].strip()}\nAnswer: {t.get('answer') or 'unknown'}" for t in history]
        parts.append("Earlier in this conversation (the problem below may refer to it):\n" + "\n".join(earlier) + "\n")
    parts.append(f"Problem: {question.strip()}")
    return "\n".join(parts)


async def solve(
    model: BaseChatModel,
    question: str,
    *,
    system: str = SYSTEM,
    knowledge: str | None = None,
    examples: Sequence[dict[str, Any]] = (),
    feedback: str | None = None,
    history: Sequence[dict[str, Any]] = (),
    node: str = "student",
    config: RunnableConfig | None = None,
    round: int = 0,
    **sampling: Any,
) -> AgentOutput[StudentAnswer]:
    prompt = user_prompt(question, knowledge=knowledge, examples=examples, feedback=feedback, history=history)
    msgs = messages(system, prompt)
    return await call_agent(
        model, msgs, parse, role="student", node=node, config=config, reminder=REMINDER,
        round=round, **sampling,
    )


async def solve_samples(
    model: BaseChatModel,
    question: str,
    *,
    n: int,
    system: str = SYSTEM,
    examples: Sequence[dict[str, Any]] = (),
    node: str = "student",
    config: RunnableConfig | None = None,
    first_sample: int = 0,
    **sampling: Any,
) -> list[AgentOutput[StudentAnswer]]:
    msgs = messages(system, user_prompt(question, examples=examples))
    return await sample_agent(
        model, msgs, parse, n=n, role="student", node=node, config=config,
        first_sample=first_sample, **sampling,
    )
