"""What an eval run writes: its settings, one row per problem, sessions, and the summary.

A run folder holds ``config.json`` (EvalConfig: everything that decides the results),
``rows.jsonl`` (EvalRow, appended and flushed as each problem finishes), ``sessions.jsonl``
(one Session per start or resume) and ``summary.json`` (EvalSummary). The summary's
``results`` come from the rows alone, so a resumed run's equal an uninterrupted run's;
wall-clock numbers live apart, in ``timing``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from studyhall.evals.datasets import SkippedRecord

EVAL_VERSION = 1


class EvalConfig(BaseModel):
    """Everything that decides a run's results. Resuming needs an identical config."""

    version: int = EVAL_VERSION
    dataset: str = Field(description="Problem set name, e.g. gsm8k-test.")
    source: str = Field(description="The file the problems were read from.")
    split: str | None = Field(None, description="GSM8K split; None for a plain JSONL file.")
    question_field: str = "question"
    answer_field: str = "answer"
    limit: int | None = None
    seed: int | None = Field(None, description="Shuffle seed applied before --limit.")
    problems: int = Field(description="How many problems the run covers.")
    problems_digest: str = Field(description="sha256 over the selected ids, questions and answers.")
    skipped: list[SkippedRecord] = Field(default_factory=list, description="Records the loader skipped.")
    graph: str
    graph_options: dict[str, Any] = Field(default_factory=dict)
    model: str
    adapter: str | None = None
    temperature: float | None = Field(None, description="None: the graph's own default.")
    max_tokens: int = Field(description="Completion budget per agent call.")
    system_prompt: str = Field(description="The student's system prompt.")
    shots: int = 0
    shot_ids: list[str] = Field(default_factory=list)
    checkers: dict[str, str] = Field(description="Checker name -> version and settings.")
    math_verify_timeout: float = 10.0


class EvalRow(BaseModel):
    """One problem's outcome, as written to rows.jsonl."""

    version: int = EVAL_VERSION
    index: int = Field(description="Position in the run's problem list.")
    id: str
    question: str
    gold: str
    prediction: str | None = Field(description="The graph's final answer.")
    response: str = Field(description="The completion text the checkers read.")
    extracted: dict[str, str | None] = Field(description="Checker -> the answer it found.")
    correct: dict[str, bool] = Field(description="Checker -> right or wrong.")
    notes: dict[str, str] = Field(default_factory=dict, description="Checker -> why it could not decide.")
    samples: list[str | None] | None = Field(None, description="Per-sample answers when the graph samples k.")
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    steps: int = 0
    retries: int = Field(0, description="Agent calls repeated after an unparseable reply.")
    parse_failures: int = 0
    error: str | None = None
    graph: str
    model: str
    adapter: str | None = None
    session: int = 0
    finished_at: float = Field(0.0, description="Unix time the row was written.")


class Session(BaseModel):
    """One start (or resume) of a run: where and when it ran."""

    version: int = EVAL_VERSION
    session: int
    started_at: float
    concurrency: int
    git_commit: str | None = None
    git_dirty: bool | None = None
    machine: dict[str, Any] = Field(default_factory=dict)


class SampleMetrics(BaseModel):
    """maj@k and pass@k over graphs that sample k answers per problem."""

    k: int
    problems: int = Field(description="Problems that carried samples.")
    maj_at_k: float
    pass_at_1: float
    pass_at_k: float


class EvalResults(BaseModel):
    """Numbers that depend only on the rows: equal for resumed and uninterrupted runs."""

    problems: int
    accuracy: dict[str, float]
    correct: dict[str, int]
    sampling: SampleMetrics | None = None
    mean_prompt_tokens: float
    mean_completion_tokens: float
    mean_total_tokens: float
    errors: int
    parse_failures: int
    retries: int = Field(0, description="Agent calls repeated after an unparseable reply, all problems.")
    checker_notes: dict[str, int] = Field(default_factory=dict, description="Checker -> undecided checks.")


class EvalTiming(BaseModel):
    """Wall-clock numbers; they differ from run to run."""

    sessions: int
    wall_seconds: float = Field(description="Sum over sessions, each from its start to its last row.")
    problems_per_second: float
    completion_tokens_per_second: float
    latency_p50: float
    latency_p95: float
    latency_mean: float


class EvalSummary(BaseModel):
    version: int = EVAL_VERSION
    name: str
    complete: bool = Field(description="Every selected problem has a row.")
    settings: EvalConfig
    environment: Session | None = Field(None, description="The latest session: git commit, machine.")
    results: EvalResults
    timing: EvalTiming
