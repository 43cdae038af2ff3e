"""The state every reasoning graph shares. It stays small: steps are plain dicts
(AgentStep dumps) so checkpoints serialise without custom types."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict


class GraphState(TypedDict, total=False):
    question: str
    gold: str | None
    examples: list[dict[str, Any]]  # retrieved worked examples (question, solution, answer)
    history: list[dict[str, Any]]  # earlier questions and answers in a chat thread (question, answer)
    steps: Annotated[list[dict[str, Any]], operator.add]
    answer: str | None
    solution: str | None
    confidence: float | None
    error: str | None
