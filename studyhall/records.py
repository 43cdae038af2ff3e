"""Records that cross boundaries: what a graph run did, step by step.

A Trajectory is what memory, evals and training consume. It is versioned and
JSONL-serialisable (``model_dump_json``); readers accept older versions they know.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

TRAJECTORY_VERSION = 1


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class ChatTurn(BaseModel):
    role: str
    content: str


class ToolCall(BaseModel):
    """A tool an agent used: calculator, Python sandbox, memory lookup."""

    tool: str
    input: str
    output: str
    ok: bool = True
    error_kind: str | None = None
    seconds: float = 0.0


class AgentStep(BaseModel):
    """One agent call: the prompt it saw, what it said, what we made of it."""

    version: int = TRAJECTORY_VERSION
    role: str = Field(description="student, knowledge, verifier, teacher, pioneer, observer, ...")
    node: str = Field(description="The graph node that made the call.")
    prompt: list[ChatTurn] = Field(default_factory=list)
    completion: str = ""
    parsed: dict[str, Any] | None = None
    verdict: str = Field("ok", description="ok | parse_error | backend_error | tool_error")
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    sample: int = 0
    round: int = 0
    attempts: int = 1
    tool_calls: list[ToolCall] = Field(default_factory=list)
    started_at: datetime = Field(default_factory=utcnow)


class Trajectory(BaseModel):
    """Everything one graph run produced, from question to final answer."""

    version: int = TRAJECTORY_VERSION
    id: str = Field(default_factory=new_id)
    thread_id: str | None = None
    question: str
    graph: str
    model: str
    adapter: str | None = None
    steps: list[AgentStep] = Field(default_factory=list)
    final_answer: str | None = None
    solution: str | None = Field(None, description="The reasoning that led to final_answer.")
    confidence: float | None = None
    gold_answer: str | None = None
    correct: bool | None = None
    reward: float | None = None
    error: str | None = None
    seconds: float = 0.0
    created_at: datetime = Field(default_factory=utcnow)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def prompt_tokens(self) -> int:
        return sum(s.prompt_tokens for s in self.steps)

    @property
    def completion_tokens(self) -> int:
        return sum(s.completion_tokens for s in self.steps)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens
