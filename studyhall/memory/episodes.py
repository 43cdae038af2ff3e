"""Episodes: what an agent solved, as episodic memory keeps it.

An ``Episode`` is one solution by one agent to one question, with how it went (answer,
correct when known, reward) and where it came from (graph, agent, model, adapter,
trajectory id, time). It is a versioned pydantic record, strict about types: a bad record
(missing field, wrong type, empty text) is rejected with a clear ``InputError``.

Its id is deterministic, so writing the same episode twice updates it instead of adding a
copy: ``sha256(trajectory id, agent)`` when it came from a trajectory, otherwise
``sha256(normalised question, normalised solution)``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from studyhall.errors import InputError
from studyhall.records import Trajectory, utcnow

EPISODE_VERSION = 1
# Roles whose output is a solution (the last of them in a trajectory produced the answer).
SOLVER_ROLES = ("student", "optimizer", "observer", "pioneer", "knowledge", "teacher")


def normalize_text(text: str) -> str:
    """Lower case, single spaces: the form compared for 'the same question'."""
    return re.sub(r"\s+", " ", text).strip().lower()


def episode_id(*, trajectory_id: str | None, agent: str, question: str, solution: str) -> str:
    if trajectory_id:
        key = f"trajectory\0{trajectory_id}\0{agent}"
    else:
        key = f"text\0{normalize_text(question)}\0{normalize_text(solution)}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


class Episode(BaseModel):
    """One remembered solution. ``id`` is filled in from the content when not given."""

    model_config = ConfigDict(strict=True, extra="forbid")

    version: int = EPISODE_VERSION
    id: str = ""
    question: str
    solution: str
    answer: str | None = None
    correct: bool | None = Field(None, description="None when there was no gold answer.")
    graph: str
    agent: str = Field(description="The role that produced the solution: student, optimizer, ...")
    reward: float | None = None
    model: str
    adapter: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    trajectory_id: str | None = None

    @field_validator("question", "solution", "graph", "agent", "model")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if not 1 <= value <= EPISODE_VERSION:
            raise ValueError(f"episode version {value} is not known (this studyhall reads 1..{EPISODE_VERSION})")
        return value

    @field_validator("created_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    @model_validator(mode="after")
    def _fill_id(self) -> Episode:
        if not self.id.strip():
            self.id = episode_id(trajectory_id=self.trajectory_id, agent=self.agent,
                                 question=self.question, solution=self.solution)
        return self

    @classmethod
    def from_trajectory(cls, traj: Trajectory, agent: str | None = None) -> Episode:
        """The final solution of a graph run and the agent that produced it.

        ``agent`` defaults to ``traj.metadata["agent"]`` when the graph recorded it, else the
        role of the last successful solver step (student, optimizer, ...). Raises InputError
        when the run has no solution to remember.
        """
        solution = traj.solution if traj.solution and traj.solution.strip() else None
        if solution is None:
            raise InputError(f"trajectory {traj.id} has no solution to remember",
                             hint="only finished runs with a solution become episodes")
        return validate_episode({
            "question": traj.question,
            "solution": solution,
            "answer": traj.final_answer,
            "correct": traj.correct,
            "graph": traj.graph,
            "agent": agent or _solving_agent(traj),
            "reward": None if traj.reward is None else float(traj.reward),
            "model": traj.model,
            "adapter": traj.adapter,
            "created_at": traj.created_at,
            "trajectory_id": traj.id,
        })


def _solving_agent(traj: Trajectory) -> str:
    recorded = traj.metadata.get("agent")
    if isinstance(recorded, str) and recorded.strip():
        return recorded
    ok = [s for s in traj.steps if s.verdict == "ok"]
    for step in reversed(ok):
        if step.role in SOLVER_ROLES:
            return step.role
    if ok:
        return ok[-1].role
    return traj.steps[-1].role if traj.steps else traj.graph


def validate_episode(data: Any, where: str = "episode") -> Episode:
    """An Episode from an Episode or a dict; anything bad is an InputError that names the
    field and what was wrong."""
    if isinstance(data, Episode):
        return data
    if not isinstance(data, dict):
        raise InputError(f"{where} rejected: expected an Episode or a dict, got {type(data).__name__}")
    try:
        return Episode.model_validate(data)
    except ValidationError as exc:
        raise _rejected(exc, where) from None


def parse_episode(line: str | bytes, where: str = "episode") -> Episode:
    """An Episode from one JSON object (a JSONL line), validated like ``validate_episode``."""
    try:
        return Episode.model_validate_json(line)
    except ValidationError as exc:
        raise _rejected(exc, where) from None


def _rejected(exc: ValidationError, where: str) -> InputError:
    problems = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "record"
        if err["type"] == "missing":
            problems.append(f"{field}: missing")
        elif err["type"] == "extra_forbidden":
            problems.append(f"{field}: unknown field")
        elif err["type"] in ("json_invalid", "model_type"):
            problems.append(f"not a JSON object ({err['msg']})")
        else:
            problems.append(f"{field} = {err.get('input')!r}: {err['msg']}")
    return InputError(f"{where} rejected: " + "; ".join(problems),
                      hint="an episode needs question, solution, graph, agent and model as "
                      "non-empty text; answer/adapter/trajectory_id text or null; correct "
                      "true/false/null; reward a number or null")


def read_episodes(path: str | Path) -> Iterator[Episode]:
    """Episodes from a JSONL file; a bad row is an InputError naming its line."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                yield parse_episode(line, where=f"{path} line {lineno}")


def write_episodes(path: str | Path, episodes: Iterable[Episode]) -> int:
    """Write episodes as JSONL (to a temporary file first, renamed when complete)."""
    target = Path(path)
    tmp = target.with_name(target.name + ".partial")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for ep in episodes:
            f.write(ep.model_dump_json() + "\n")
            n += 1
    tmp.replace(target)
    return n

