"""Problem sets: GSM8K from a folder (or, online, its public source) and any JSONL file.

A record with no usable answer (or an id seen before) is reported (line number and reason)
and skipped; it never stops a run. Subsets are deterministic: ``limit`` takes the first N after an optional
seeded shuffle.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from pathlib import Path

from pydantic import BaseModel

from studyhall.errors import InputError
from studyhall.tools.answers import normalize_number

log = logging.getLogger(__name__)

GSM8K_URL = "https://raw.githubusercontent.com/openai/grade-school-math/master/grade_school_math/data/{split}.jsonl"
_CALC = re.compile(r"<<[^>]*>>")


class Problem(BaseModel):
    version: int = 1
    id: str
    question: str
    answer: str  # normalised final answer
    solution: str | None = None  # worked solution when the set has one


class SkippedRecord(BaseModel):
    line: int
    reason: str


class ProblemSet(BaseModel):
    name: str
    source: str
    problems: list[Problem]
    skipped: list[SkippedRecord] = []


def gsm8k_final(answer: str) -> str | None:
    """The number after ``####`` with thousands commas stripped."""
    if "####" not in answer:
        return None
    return normalize_number(answer.rsplit("####", 1)[1].strip())


def gsm8k_solution(answer: str) -> str:
    """The worked solution without calculator annotations or the #### line."""
    return _CALC.sub("", answer.rsplit("####", 1)[0]).strip()


def _candidates() -> list[Path]:
    out = []
    if env := os.environ.get("STUDYHALL_GSM8K_PATH"):
        out.append(Path(env))
    here = Path.cwd()
    out += [here / "data" / "gsm8k", here.parent / "shared" / "data" / "gsm8k"]
    repo = Path(__file__).resolve().parents[2]
    out += [repo / "data" / "gsm8k", repo.parent / "shared" / "data" / "gsm8k"]
    return out


def find_gsm8k(path: str | Path | None = None) -> Path | None:
    """The given folder if it holds GSM8K, else (no path given) the first known location."""
    for cand in [Path(path)] if path else _candidates():
        if cand.is_dir() and (cand / "test.jsonl").is_file():
            return cand
    return None


def _download_gsm8k(split: str, cache_dir: Path) -> Path:
    import httpx

    dest = cache_dir / "data" / "gsm8k" / f"{split}.jsonl"
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        r = httpx.get(GSM8K_URL.format(split=split), timeout=60, follow_redirects=True)
        r.raise_for_status()
    except httpx.HTTPError as exc:
        raise InputError(
            f"GSM8K not found locally and the download failed: {exc}",
            hint="pass --data PATH to a folder with train.jsonl and test.jsonl",
        ) from None
    tmp = dest.with_suffix(".part")
    tmp.write_bytes(r.content)
    tmp.replace(dest)
    return dest


def load_jsonl(
    path: str | Path,
    *,
    question_field: str = "question",
    answer_field: str = "answer",
    id_prefix: str | None = None,
    gsm8k_answers: bool | None = None,
) -> ProblemSet:
    """Any JSONL set. ``gsm8k_answers`` (auto when the answer holds ``####``) reads the final
    answer after ``####`` and keeps the worked solution."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such data file: {path}")
    problems: list[Problem] = []
    skipped: list[SkippedRecord] = []
    prefix = id_prefix or path.stem
    seen: set[str] = set()
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as exc:
                skipped.append(SkippedRecord(line=lineno, reason=f"not JSON: {exc}"))
                continue
            if not isinstance(rec, dict):
                skipped.append(SkippedRecord(line=lineno, reason="not a JSON object"))
                continue
            question = rec.get(question_field)
            raw = rec.get(answer_field)
            if not isinstance(question, str) or not question.strip():
                skipped.append(SkippedRecord(line=lineno, reason=f"missing or empty {question_field!r}"))
                continue
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                skipped.append(SkippedRecord(line=lineno, reason=f"missing {answer_field!r}"))
                continue
            raw_s = str(raw)
            use_gsm8k = gsm8k_answers if gsm8k_answers is not None else "####" in raw_s
            final = gsm8k_final(raw_s) if use_gsm8k else normalize_number(raw_s)
            if final is None:
                skipped.append(SkippedRecord(line=lineno, reason=f"no numeric answer in {raw_s[-60:]!r}"))
                continue
            pid = str(rec.get("id", f"{prefix}-{lineno - 1}"))
            if pid in seen:  # ids key resumable runs, so they must be unique
                skipped.append(SkippedRecord(line=lineno, reason=f"duplicate id {pid!r}"))
                continue
            seen.add(pid)
            problems.append(Problem(id=pid, question=question.strip(), answer=final,
                                    solution=gsm8k_solution(raw_s) if use_gsm8k else None))
    for s in skipped:
        log.warning("%s line %d skipped: %s", path, s.line, s.reason)
    return ProblemSet(name=prefix, source=str(path), problems=problems, skipped=skipped)


def load_gsm8k(
    path: str | Path | None = None,
    split: str = "test",
    cache_dir: Path | None = None,
) -> ProblemSet:
    """GSM8K ``split`` from a folder (or a .jsonl file), else from its public source."""
    if path and Path(path).is_file():
        return load_jsonl(path, id_prefix=f"gsm8k-{split}", gsm8k_answers=True)
    folder = find_gsm8k(path)
    if path and folder is None:
        raise InputError(f"no GSM8K files under {path}", hint="the folder needs train.jsonl and test.jsonl")
    if folder is not None:
        file = folder / f"{split}.jsonl"
        if not file.is_file():
            raise InputError(f"no {split}.jsonl in {folder}", hint="splits: train, test")
    else:
        from studyhall.config import load_settings

        file = _download_gsm8k(split, cache_dir or load_settings().cache_dir)
    ps = load_jsonl(file, id_prefix=f"gsm8k-{split}", gsm8k_answers=True)
    ps.name = f"gsm8k-{split}"
    return ps


def load_problem_set(
    data: str | Path | None = None,
    *,
    split: str = "test",
    question_field: str = "question",
    answer_field: str = "answer",
    cache_dir: Path | None = None,
) -> ProblemSet:
    """What ``--data`` names: a JSONL file (any set, fields configurable), a GSM8K folder
    (``split``), or nothing (GSM8K from the known locations, else its public source)."""
    if data is not None and Path(data).is_file():
        return load_jsonl(data, question_field=question_field, answer_field=answer_field)
    if data is not None and not Path(data).exists():
        raise InputError(f"no such data file or folder: {data}",
                         hint="pass a .jsonl file or a GSM8K folder with train.jsonl and test.jsonl")
    return load_gsm8k(data, split, cache_dir)


def subset(problems: list[Problem], limit: int | None = None, seed: int | None = None) -> list[Problem]:
    """First ``limit`` problems, after a shuffle with ``seed`` when one is given."""
    items = list(problems)
    if seed is not None:
        random.Random(seed).shuffle(items)
    return items[:limit] if limit else items
