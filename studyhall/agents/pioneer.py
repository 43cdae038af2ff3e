"""The pioneer (CORY): answers the problem first, on its own, like a student."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig

from studyhall.agents import student
from studyhall.agents.base import AgentOutput, call_agent, messages
from studyhall.agents.student import StudentAnswer

SYSTEM = student.SYSTEM


async def answer(
    model: BaseChatModel, question: str, *, config: RunnableConfig | None = None, **sampling: Any
) -> AgentOutput[StudentAnswer]:
    return await call_agent(
        model, messages(SYSTEM, student.user_prompt(question)), student.parse,
        role="pioneer", node="pioneer", config=config, reminder=student.REMINDER, **sampling,
    )
