"""The observer (CORY): answers after reading the pioneer's answer; it may agree or
correct it. Its answer is the pair's final answer."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from pydantic import BaseModel

from studyhall.agents import student
from studyhall.agents.base import AgentOutput, call_agent, messages
from studyhall.tools.answers import answers_match

SYSTEM = (
    "You are a careful math student working with a partner. Your partner has already "
    "answered the problem. Check their reasoning step by step. If it is right, agree with it; "
    "if it is wrong, correct it and solve the problem yourself. Write every calculation out. "
    "End with a final line of the form: Answer: <number>"
)


class ObserverAnswer(BaseModel):
    reasoning: str
    answer: str
    agrees: bool


def user_prompt(question: str, pioneer_solution: str) -> str:
    return f"Problem: {question.strip()}\n\nYour partner's answer:\n{pioneer_solution.strip()}"


async def answer(
    model: BaseChatModel,
    question: str,
    pioneer_solution: str,
    pioneer_answer: str | None,
    *,
    config: RunnableConfig | None = None,
    **sampling: Any,
) -> AgentOutput[ObserverAnswer]:
    def parse(text: str) -> ObserverAnswer:
        got = student.parse(text)
        return ObserverAnswer(reasoning=got.reasoning, answer=got.answer,
                              agrees=answers_match(got.answer, pioneer_answer))

    return await call_agent(
        model, messages(SYSTEM, user_prompt(question, pioneer_solution)), parse,
        role="observer", node="observer", config=config, reminder=student.REMINDER, **sampling,
    )
