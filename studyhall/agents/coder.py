"""The student in tool-integrated mode (MARIO, DotaMath): writes a short Python program
for the problem, reads what it printed, fixes it after an error, and answers."""

from __future__ import annotations

import re
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig
from pydantic import BaseModel

from studyhall.agents.base import AgentOutput, ParseError, call_agent
from studyhall.tools.answers import extract_marked

SYSTEM = (
    "You solve math word problems by writing a short Python program. Always reply with the "
    "whole program in one ```python code block: use variables with clear names, compute step "
    "by step, and print the final numeric answer with print(). Do not use input() or files. "
    "The program is run and you see its output or its error; after an error send a fixed program."
)
NEED_CODE = "Do not answer yet: write the Python program that computes the answer, in one ```python block."
REMINDER = "Reply with one ```python code block that prints the answer, or with 'Answer: <number>'."
_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.S | re.I)


class CoderTurn(BaseModel):
    code: str | None = None
    answer: str | None = None


def parse(text: str) -> CoderTurn:
    blocks = _FENCE.findall(text)
    code = blocks[-1].strip() if blocks else None
    if code is None and "print(" in text and "```" not in text:
        code = text.strip()  # a bare program without a fence
    answer = extract_marked(text) if code is None else None
    if not code and answer is None:
        raise ParseError("neither a ```python block nor 'Answer: <number>'")
    return CoderTurn(code=code or None, answer=answer)


def output_message(stdout: str, value: str | None, error: str | None) -> str:
    if error:
        return f"The program failed:\n{error.strip()[:1500]}\nSend a fixed program in one ```python block."
    shown = stdout.strip()[:1500] or "(nothing printed)"
    if value is not None and value not in shown:
        shown += f"\n(last expression: {value})"
    return f"Output:\n{shown}\nIf this answers the problem, reply 'Answer: <number>'; otherwise send a fixed program."


async def write(
    model: BaseChatModel,
    convo: list[BaseMessage],
    *,
    config: RunnableConfig | None = None,
    round: int = 0,
    **sampling: Any,
) -> AgentOutput[CoderTurn]:
    return await call_agent(model, convo, parse, role="coder", node="coder", config=config,
                            reminder=REMINDER, round=round, **sampling)
