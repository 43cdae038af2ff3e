"""Metrics over eval rows: accuracy per checker, maj@k, pass@k, tokens, latency, throughput.

Everything here is a pure function of the rows (and, for timing, the sessions), so a
summary can always be recomputed from a run folder.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from studyhall.evals.checkers import CHECKERS
from studyhall.evals.records import EvalResults, EvalRow, EvalTiming, SampleMetrics, Session
from studyhall.tools.answers import answers_match, normalize_number


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al., 2021): the chance that k of n samples, c of them right,
    hold at least one right one. ``1 - C(n-c, k) / C(n, k)``, computed stably."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def sample_answers(samples: Sequence[Any] | None) -> list[str | None]:
    """The graph contract: ``metadata["samples"]`` is a list of answers (None when a sample
    had none); dicts with an "answer" key are accepted too."""
    out: list[str | None] = []
    for s in samples or []:
        if isinstance(s, dict):
            s = s.get("answer")
        out.append(normalize_number(str(s)) if s is not None else None)
    return out


def majority(answers: Sequence[str | None]) -> str | None:
    """The most common answer (numerically equal ones pooled); a tie goes to the one seen first."""
    groups: list[tuple[str, int]] = []  # representative, count
    for a in answers:
        if a is None:
            continue
        for i, (rep, count) in enumerate(groups):
            if answers_match(a, rep):
                groups[i] = (rep, count + 1)
                break
        else:
            groups.append((a, 1))
    if not groups:
        return None
    best = max(count for _, count in groups)
    return next(rep for rep, count in groups if count == best)


def sample_metrics(rows: Sequence[EvalRow]) -> SampleMetrics | None:
    """maj@k and pass@k over the rows that carry samples; k is the smallest sample count so
    the unbiased estimator is defined for every problem (maj@k votes over the first k)."""
    with_samples = [r for r in rows if r.samples]
    if not with_samples:
        return None
    k = min(len(r.samples or []) for r in with_samples)
    maj = p1 = pk = 0.0
    for r in with_samples:
        answers = r.samples or []
        n = len(answers)
        c = sum(answers_match(a, r.gold) for a in answers)
        maj += answers_match(majority(answers[:k]), r.gold)
        p1 += pass_at_k(n, c, 1)
        pk += pass_at_k(n, c, k)
    # problems that failed before sampling count as wrong, like any other error
    total = len(rows)
    return SampleMetrics(k=k, problems=len(with_samples), maj_at_k=maj / total,
                         pass_at_1=p1 / total, pass_at_k=pk / total)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation, as numpy's default."""
    if not values:
        return 0.0
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def results(rows: Sequence[EvalRow]) -> EvalResults:
    """The numbers that depend only on the rows (order does not matter)."""
    n = len(rows)
    correct = {c: sum(r.correct.get(c, False) for r in rows) for c in CHECKERS}
    notes = Counter(c for r in rows for c in r.notes)
    return EvalResults(
        problems=n,
        accuracy={c: correct[c] / n if n else 0.0 for c in CHECKERS},
        correct=correct,
        sampling=sample_metrics(rows),
        mean_prompt_tokens=_mean([r.prompt_tokens for r in rows]),
        mean_completion_tokens=_mean([r.completion_tokens for r in rows]),
        mean_total_tokens=_mean([r.prompt_tokens + r.completion_tokens for r in rows]),
        errors=sum(r.error is not None for r in rows),
        parse_failures=sum(r.parse_failures > 0 for r in rows),
        retries=sum(r.retries for r in rows),
        checker_notes=dict(sorted(notes.items())),
    )


def timing(rows: Sequence[EvalRow], sessions: Sequence[Session]) -> EvalTiming:
    """Latency percentiles over problems; throughput over the sessions' active time (each
    session from its start to its last written row; time lost to a kill is not counted)."""
    started = {s.session: s.started_at for s in sessions}
    last: dict[int, float] = {}
    for r in rows:
        last[r.session] = max(last.get(r.session, 0.0), r.finished_at)
    wall = sum(max(0.0, end - started[s]) for s, end in last.items() if s in started)
    latencies = [r.seconds for r in rows]
    return EvalTiming(
        sessions=len(sessions),
        wall_seconds=wall,
        problems_per_second=len(rows) / wall if wall > 0 else 0.0,
        completion_tokens_per_second=sum(r.completion_tokens for r in rows) / wall if wall > 0 else 0.0,
        latency_p50=percentile(latencies, 50),
        latency_p95=percentile(latencies, 95),
        latency_mean=_mean(latencies),
    )
