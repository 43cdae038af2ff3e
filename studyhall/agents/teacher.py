"""The teacher (LLM2LLM): given a problem the student got wrong, writes new, similar
problems with worked solutions and final answers, targeted at the same skill."""

from __future__ import annotations

import re
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from pydantic import BaseModel

from studyhall.agents.base import AgentOutput, ParseError, call_agent, messages
from studyhall.tools.answers import extract_marked, normalize_number

SYSTEM = (
    "You are a math teacher. A student answered the problem below wrongly. Write {n} new word "
    "problems that practise the same skill: similar in style, with different numbers and "
    "settings. Give each a short worked solution and its final answer, in exactly this form:\n"
    "Problem: <the new problem>\n"
    "Solution: <short worked solution>\n"
    "Answer: <number>"
)
REMINDER = "Use the form 'Problem: ...' then 'Solution: ...' then 'Answer: <number>' for each new problem."


class NewProblem(BaseModel):
    question: str
    solution: str
    answer: str


class Lesson(BaseModel):
    problems: list[NewProblem]


_BLOCK = re.compile(r"Problem\s*\d*\s*[:.]\s*(.+?)\s*Solution\s*[:.]\s*(.+?)(?=\n\s*\**\s*Problem\s*\d*\s*[:.]|\Z)", re.S | re.I)


def parse(text: str) -> Lesson:
    problems = []
    for m in _BLOCK.finditer(text):
        question, rest = m.group(1).strip(), m.group(2).strip()
        answer = extract_marked(rest)
        if not question or answer is None:
            continue
        solution = re.split(r"\n?\s*\**\s*(?:final\s+)?answer\s*[:=]", rest, flags=re.I)[0].strip()
        problems.append(NewProblem(question=question.strip("* "), solution=solution, answer=answer))
    if not problems:
        raise ParseError("no complete Problem/Solution/Answer block found")
    return Lesson(problems=problems)


def user_prompt(question: str, gold: str | None, gold_solution: str | None, student_answer: str | None) -> str:
    parts = [f"Original problem: {question.strip()}"]
    if gold_solution:
        parts.append(f"Correct solution: {gold_solution.strip()}")
    if gold is not None:
        parts.append(f"Correct answer: {normalize_number(gold) or gold}")
    parts.append(f"The student's wrong answer: {student_answer if student_answer is not None else '(none)'}")
    return "\n".join(parts)


async def teach(
    model: BaseChatModel,
    question: str,
    *,
    gold: str | None,
    student_answer: str | None,
    gold_solution: str | None = None,
    n: int = 2,
    config: RunnableConfig | None = None,
    **sampling: Any,
) -> AgentOutput[Lesson]:
    msgs = messages(SYSTEM.format(n=n), user_prompt(question, gold, gold_solution, student_answer))
    return await call_agent(model, msgs, parse, role="teacher", node="teacher", config=config,
                            reminder=REMINDER, **sampling)
