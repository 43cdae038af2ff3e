"""Training rows from trajectories, as Hugging Face ``datasets``: SFT, DPO, GRPO/CORY.

Every agent step that answered a problem (student, pioneer, observer; vote's samples; the
teach graph's re-solves) is an *attempt*: its problem is read back from its prompt
(``Problem: ...``), its gold answer comes from the trajectory (or the teach graph's batch),
and :func:`rewards.check_answer` marks it right or wrong — one definition of correct for
all three datasets.

- SFT: the correct attempts (rejection sampling / STaR) and the teacher's checked new
  problems (LLM2LLM), deduplicated, at most ``max_per_question`` per problem.
- DPO: for one problem and prompt, a correct attempt (chosen) vs an incorrect one
  (rejected); the verifier's score breaks ties (best-scored correct first, worst-scored
  incorrect first); several pairs per problem.
- GRPO / CORY: one prompt per problem with its gold ``answer`` column for the rewards.

Prompts are chat messages in the agents' own format (system + user), so an adapter trained
on them helps the graphs that send those prompts. A malformed row or a problem without a
gold answer is an InputError naming the row (or, with ``skip_bad_rows``, listed in the
report's ``skipped``).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from studyhall.errors import InputError
from studyhall.records import Trajectory
from studyhall.training.config import DataOptions
from studyhall.training.rewards import check_answer, final_answer

DATA_REPORT_VERSION = 1
ANSWER_ROLES = ("student", "pioneer", "observer")
_PARTNER = "\n\nYour partner's answer:"
_SOLUTION = "Student's solution:\n"


class SkippedRow(BaseModel):
    origin: str
    reason: str


class DataReport(BaseModel):
    """What a dataset was built from and what it holds; ``data_hash`` names its rows."""

    version: int = DATA_REPORT_VERSION
    kind: str
    rows: int
    questions: int
    records: int = Field(description="Trajectories read.")
    attempts: int = Field(0, description="Answering agent steps found.")
    correct: int = Field(0, description="Of those, how many reached the gold answer.")
    sources: dict[str, int] = Field(default_factory=dict, description="Rows per source (trajectory, teacher).")
    skipped: list[SkippedRow] = Field(default_factory=list)
    data_hash: str = ""

    def summary(self) -> str:
        src = ", ".join(f"{k} {v}" for k, v in sorted(self.sources.items()))
        seen = f"{self.attempts} attempts, {self.correct} correct; " if self.attempts else ""
        text = (f"{self.kind}: {self.rows} rows over {self.questions} questions from {self.records} trajectories"
                f" ({seen}{src})")
        if self.skipped:
            text += f"; skipped {len(self.skipped)} bad rows"
        return text


@dataclass
class Record:
    """A trajectory and where it came from (``FILE line N``), for error messages."""

    origin: str
    traj: Trajectory


@dataclass
class Attempt:
    question: str
    gold: str
    prompt: list[dict[str, str]]
    completion: str
    correct: bool
    role: str
    source: str  # "trajectory" | "teacher"
    origin: str
    order: int = 0
    score: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------- reading records
def load_records(source: Any, *, skip_bad_rows: bool = False) -> tuple[list[Record], list[SkippedRow]]:
    """Trajectories from a JSONL file (path), a TrajectoryStore, or an iterable of Trajectory."""
    skipped: list[SkippedRow] = []
    if isinstance(source, (str, Path)):
        records = _read_jsonl(Path(source), skip_bad_rows, skipped)
        name = str(source)
    elif hasattr(source, "query"):
        records = [Record(f"trajectory {t.id}", t) for t in source.query()]
        name = f"store {getattr(source, 'path', '')}"
    else:
        records = [Record(f"trajectory {i} ({t.id})", t) for i, t in enumerate(source, 1)]
        name = "the trajectories given"
    if not records and not skipped:
        raise InputError(f"{name} holds no trajectories",
                         hint="export some with TrajectoryStore.export_jsonl, or run `studyhall solve --gold ...`")
    kept = []
    for rec in records:
        problem = _bad_record(rec.traj)
        if problem is None:
            kept.append(rec)
        elif skip_bad_rows:
            skipped.append(SkippedRow(origin=rec.origin, reason=problem))
        else:
            raise InputError(f"{rec.origin}: {problem}",
                             hint="every training question needs a gold answer; fix the row or pass --skip-bad-rows")
    if not kept:
        raise InputError(f"{name}: no usable trajectories ({len(skipped)} bad rows, e.g. {skipped[0].origin}: "
                         f"{skipped[0].reason})" if skipped else f"{name} holds no trajectories")
    return kept, skipped


def _read_jsonl(path: Path, skip_bad_rows: bool, skipped: list[SkippedRow]) -> list[Record]:
    if not path.is_file():
        raise InputError(f"no trajectories file at {path}", hint="pass a JSONL file of trajectories with --data")
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            origin = f"{path} line {lineno}"
            try:
                out.append(Record(origin, Trajectory.model_validate(json.loads(line))))
            except (ValueError, ValidationError) as exc:
                reason = f"not a trajectory: {str(exc).splitlines()[0]}"
                if not skip_bad_rows:
                    raise InputError(f"{origin}: {reason}", hint="each line must be one Trajectory as JSON") from None
                skipped.append(SkippedRow(origin=origin, reason=reason))
    return out


def _bad_record(t: Trajectory) -> str | None:
    if not t.question.strip():
        return "the question is empty"
    if t.gold_answer is None and not _batch_golds(t):
        return f"question {_short(t.question)!r} has no gold answer"
    return None


def _short(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def qkey(text: str) -> str:
    """Questions compare equal up to case, spacing and punctuation."""
    return re.sub(r"\W+", " ", text.lower()).strip()


def _batch_golds(t: Trajectory) -> dict[str, tuple[str, str]]:
    out = {}
    for p in t.metadata.get("batch") or []:
        if isinstance(p, dict) and p.get("question") and p.get("answer") is not None:
            out[qkey(p["question"])] = (p["question"], str(p["answer"]))
    return out


def _teacher_problems(t: Trajectory) -> list[dict[str, Any]]:
    return [p for p in t.metadata.get("new_problems") or []
            if isinstance(p, dict) and p.get("question") and p.get("answer") is not None]


# ---------------------------------------------------------------------------- attempts
def student_prompt(question: str) -> list[dict[str, str]]:
    """The student's chat prompt for a question, exactly as the graphs send it."""
    from studyhall.agents import student

    return [{"role": "system", "content": student.SYSTEM}, {"role": "user", "content": student.user_prompt(question)}]


def observer_prompt(question: str, pioneer_solution: str) -> list[dict[str, str]]:
    from studyhall.agents import observer

    return [{"role": "system", "content": observer.SYSTEM},
            {"role": "user", "content": observer.user_prompt(question, pioneer_solution)}]


def _question_in(prompt: list[dict[str, str]]) -> str | None:
    users = [m["content"] for m in prompt if m.get("role") == "user"]
    if not users:
        return None
    text = users[-1].split(_PARTNER)[0]
    if "Problem:" not in text:
        return None
    return text.rsplit("Problem:", 1)[1].strip() or None


def attempts(rec: Record, options: DataOptions | None = None) -> list[Attempt]:
    """Every answering step of a trajectory whose problem has a known gold answer, plus
    the teacher's checked problems."""
    options = options or DataOptions()
    t = rec.traj
    golds = dict(_batch_golds(t))
    if t.gold_answer is not None:
        golds[qkey(t.question)] = (t.question, t.gold_answer)
    teacher = _teacher_problems(t) if options.teacher_problems else []
    for p in teacher:
        golds.setdefault(qkey(p["question"]), (p["question"], str(p["answer"])))
    scores = _verifier_scores(t)
    out: list[Attempt] = []
    last_prompt: dict[str, list[dict[str, str]]] = {}
    for i, step in enumerate(t.steps):
        prompt = [m.model_dump() for m in step.prompt] or last_prompt.get(step.node, [])
        if step.prompt:
            last_prompt[step.node] = prompt
        if step.role not in ANSWER_ROLES or step.verdict not in ("ok", "parse_error") or not step.completion.strip():
            continue
        question = _question_in(prompt) if prompt else t.question
        known = golds.get(qkey(question)) if question else None
        if known is None:
            continue
        question, gold = known
        if options.prompt == "canonical" and step.role != "observer":
            prompt = student_prompt(question)
        if not prompt:
            continue
        norm = " ".join(step.completion.split())
        score = scores.get(norm)
        if score is None and isinstance(t.metadata.get("scores"), dict):  # vote: verifier score per answer
            answer = final_answer(step.completion)
            score = next((float(v) for a, v in t.metadata["scores"].items() if answer is not None and str(a) == answer), None)
        source = "teacher" if step.node == "check" else "trajectory"
        out.append(Attempt(question=question, gold=gold, prompt=prompt, completion=step.completion.strip(),
                           correct=check_answer(step.completion, gold), role=step.role, source=source,
                           origin=f"{rec.origin} step {i}", order=i, score=score))
    for j, p in enumerate(teacher):
        solution = str(p.get("solution") or "").strip()
        completion = solution if final_answer(solution) == str(p["answer"]) and "Answer:" in solution else \
            f"{solution}\nAnswer: {p['answer']}".strip()
        out.append(Attempt(question=p["question"], gold=str(p["answer"]), prompt=student_prompt(p["question"]),
                           completion=completion, correct=True, role="teacher", source="teacher",
                           origin=f"{rec.origin} new problem {j}", order=len(t.steps) + j))
    return out


def _verifier_scores(t: Trajectory) -> dict[str, float]:
    """Normalised solution text -> the verifier's score for it, from verifier steps."""
    out: dict[str, float] = {}
    for step in t.steps:
        if step.role != "verifier" or not step.parsed or "score" not in step.parsed:
            continue
        users = [m.content for m in step.prompt if m.role == "user"]
        if users and _SOLUTION in users[-1]:
            solution = users[-1].split(_SOLUTION, 1)[1]
            try:
                out[" ".join(solution.split())] = float(step.parsed["score"])
            except (TypeError, ValueError):
                continue
    return out


# ---------------------------------------------------------------------------- datasets
def _all_attempts(records: list[Record], options: DataOptions) -> list[Attempt]:
    out: list[Attempt] = []
    for rec in records:
        out.extend(attempts(rec, options))
    return out


def _hash_rows(rows: list[dict[str, Any]]) -> str:
    h = hashlib.sha256()
    for row in rows:
        h.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def _finish(kind: str, rows: list[dict[str, Any]], records: list[Record], skipped: list[SkippedRow],
            atts: list[Attempt], options: DataOptions) -> tuple[Any, DataReport]:
    from datasets import Dataset

    if options.max_rows is not None:
        rows = rows[: options.max_rows]
    sources: dict[str, int] = {}
    for row in rows:
        sources[row["source"]] = sources.get(row["source"], 0) + 1
    report = DataReport(
        kind=kind, rows=len(rows), questions=len({qkey(r["question"]) for r in rows}), records=len(records),
        attempts=sum(1 for a in atts if a.role != "teacher"), correct=sum(1 for a in atts if a.correct and a.role != "teacher"),
        sources=sources, skipped=skipped, data_hash=_hash_rows(rows),
    )
    return Dataset.from_list(rows), report


def sft_dataset(source: Any, options: DataOptions | None = None) -> tuple[Any, DataReport]:
    """prompt / completion rows (conversational) from correct attempts and teacher problems."""
    options = options or DataOptions()
    records, skipped = load_records(source, skip_bad_rows=options.skip_bad_rows)
    atts = _all_attempts(records, options)
    rows, seen, per_question = [], set(), {}
    for a in atts:
        if not a.correct:
            continue
        q = qkey(a.question)
        key = (q, json.dumps(a.prompt, sort_keys=True), " ".join(a.completion.split()))
        if key in seen or per_question.get(q, 0) >= options.max_per_question:
            continue
        seen.add(key)
        per_question[q] = per_question.get(q, 0) + 1
        rows.append({"prompt": a.prompt, "completion": [{"role": "assistant", "content": a.completion}],
                     "question": a.question, "answer": a.gold, "source": a.source})
    if not rows:
        raise InputError(
            f"no correct solutions to train on ({len(records)} trajectories, "
            f"{sum(1 for a in atts if a.role != 'teacher')} attempts, none correct)",
            hint="SFT keeps only attempts that reach the gold answer; solve more problems, or use GRPO",
        )
    return _finish("sft", rows, records, skipped, atts, options)


def dpo_dataset(source: Any, options: DataOptions | None = None) -> tuple[Any, DataReport]:
    """prompt / chosen / rejected rows: a correct and an incorrect attempt at one prompt."""
    options = options or DataOptions()
    records, skipped = load_records(source, skip_bad_rows=options.skip_bad_rows)
    atts = _all_attempts(records, options)
    groups: dict[tuple[str, str], dict[str, list[Attempt]]] = {}
    for n, a in enumerate(atts):
        if a.role == "teacher":
            continue
        a.order = n
        group = groups.setdefault((qkey(a.question), json.dumps(a.prompt, sort_keys=True)), {"good": [], "bad": []})
        bucket = group["good" if a.correct else "bad"]
        if all(" ".join(b.completion.split()) != " ".join(a.completion.split()) for b in bucket):
            bucket.append(a)
    rows = []
    for group in groups.values():
        good = sorted(group["good"], key=lambda a: (-_score(a), a.order))  # best-scored correct first
        bad = sorted(group["bad"], key=lambda a: (_score(a), a.order))  # most clearly wrong first
        pairs = sorted(((i, j) for i in range(len(good)) for j in range(len(bad))), key=lambda p: (p[0] + p[1], p[0]))
        for i, j in pairs[: options.max_per_question]:
            c, r = good[i], bad[j]
            rows.append({
                "prompt": c.prompt,
                "chosen": [{"role": "assistant", "content": c.completion}],
                "rejected": [{"role": "assistant", "content": r.completion}],
                "question": c.question, "answer": c.gold, "source": "trajectory",
                "chosen_score": _score(c), "rejected_score": _score(r),
                "rejected_answer": final_answer(r.completion),
            })
    if not rows:
        raise InputError(
            f"no preference pairs: no question has both a correct and an incorrect attempt "
            f"({len(records)} trajectories, {len(atts)} attempts)",
            hint="sample several answers per question (e.g. the vote graph) so right and wrong ones meet",
        )
    return _finish("dpo", rows, records, skipped, atts, options)


def _score(a: Attempt) -> float:
    return 0.5 if a.score is None else a.score


def prompt_dataset(source: Any, options: DataOptions | None = None, kind: str = "grpo") -> tuple[Any, DataReport]:
    """One row per problem: the student prompt and its gold ``answer`` (GRPO and CORY)."""
    options = options or DataOptions()
    records, skipped = load_records(source, skip_bad_rows=options.skip_bad_rows)
    problems: dict[str, tuple[str, str, str]] = {}
    for rec in records:
        t = rec.traj
        if t.gold_answer is not None:
            problems.setdefault(qkey(t.question), (t.question, t.gold_answer, "trajectory"))
        for q, (text, gold) in _batch_golds(t).items():
            problems.setdefault(q, (text, gold, "trajectory"))
        if options.teacher_problems:
            for p in _teacher_problems(t):
                problems.setdefault(qkey(p["question"]), (p["question"], str(p["answer"]), "teacher"))
    rows = [{"prompt": student_prompt(q), "answer": gold, "question": q, "source": src}
            for q, gold, src in problems.values()]
    return _finish(kind, rows, records, skipped, [], options)


def build_dataset(method: str, source: Any, options: DataOptions | None = None) -> tuple[Any, DataReport]:
    if method == "sft":
        return sft_dataset(source, options)
    if method == "dpo":
        return dpo_dataset(source, options)
    if method in ("grpo", "cory"):
        return prompt_dataset(source, options, kind=method)
    raise InputError(f"unknown training method {method!r}", hint="methods: sft, dpo, grpo, cory")
