"""Compare eval runs: a table (accuracy per checker, tokens, time) and a PNG plot of
accuracy against mean tokens per problem, one point per run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from studyhall.errors import InputError
from studyhall.evals.checkers import CHECKERS
from studyhall.evals.harness import RunDir
from studyhall.evals.records import EvalSummary


def load_summaries(paths: Sequence[str | Path]) -> list[EvalSummary]:
    """Each run's summary, recomputed from its rows (so unfinished runs compare too)."""
    if not paths:
        raise InputError("no runs to compare", hint="studyhall eval compare runs/A runs/B ...")
    out = []
    for p in paths:
        if not Path(p).is_dir():
            raise InputError(f"no such run folder: {p}")
        out.append(RunDir(p).summarize(write=False))
    names = [s.name for s in out]
    for s, p in zip(out, paths, strict=True):
        if names.count(s.name) > 1:  # same folder name under different parents
            s.name = str(p)
    return out


def table(summaries: Sequence[EvalSummary]) -> Any:
    """A rich Table with one column per run and one row per number, so it fits a terminal."""
    from rich.table import Table

    t = Table(title="eval results")
    t.add_column("", style="bold", no_wrap=True)
    for s in summaries:
        t.add_column(s.name, justify="right", overflow="fold")
    lines: list[tuple[str, list[str]]] = [
        ("graph", [s.settings.graph for s in summaries]),
        ("model", [s.settings.model + (f" + {s.settings.adapter}" if s.settings.adapter else "") for s in summaries]),
        ("data", [f"{s.settings.dataset}" for s in summaries]),
        ("problems", [str(s.results.problems) if s.complete else f"{s.results.problems}/{s.settings.problems}"
                      for s in summaries]),
    ]
    lines += [(f"accuracy {c}", [f"{100 * s.results.accuracy[c]:.1f}%" for s in summaries]) for c in CHECKERS]
    if any(s.results.sampling for s in summaries):
        def sampled(s: EvalSummary, field: str) -> str:
            m = s.results.sampling
            return f"{100 * getattr(m, field):.1f}%" if m else "-"

        lines += [
            ("samples k", [str(s.results.sampling.k) if s.results.sampling else "-" for s in summaries]),
            ("maj@k", [sampled(s, "maj_at_k") for s in summaries]),
            ("pass@1", [sampled(s, "pass_at_1") for s in summaries]),
            ("pass@k", [sampled(s, "pass_at_k") for s in summaries]),
        ]
    lines += [
        ("prompt tokens / problem", [f"{s.results.mean_prompt_tokens:.0f}" for s in summaries]),
        ("completion tokens / problem", [f"{s.results.mean_completion_tokens:.0f}" for s in summaries]),
        ("latency p50 / p95 (s)", [f"{s.timing.latency_p50:.2f} / {s.timing.latency_p95:.2f}" for s in summaries]),
        ("problems / s", [f"{s.timing.problems_per_second:.2f}" for s in summaries]),
        ("completion tokens / s", [f"{s.timing.completion_tokens_per_second:.1f}" for s in summaries]),
        ("errors", [str(s.results.errors) for s in summaries]),
        ("parse failures / retries", [f"{s.results.parse_failures} / {s.results.retries}" for s in summaries]),
    ]
    for label, cells in lines:
        t.add_row(label, *cells)
    return t


def plot(summaries: Sequence[EvalSummary], path: str | Path, checker: str = "math_verify") -> Path:
    """Accuracy (one checker) against mean total tokens per problem, one labelled point per run."""
    if checker not in CHECKERS:
        raise InputError(f"unknown checker {checker!r}", hint="checkers: " + ", ".join(CHECKERS))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    most = max((s.results.mean_total_tokens for s in summaries), default=0.0)
    for s in summaries:
        x, y = s.results.mean_total_tokens, 100 * s.results.accuracy[checker]
        ax.scatter([x], [y], s=50)
        ax.annotate(s.name, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel("mean tokens per problem (prompt + completion)")
    ax.set_ylabel(f"accuracy, {checker} (%)")
    ax.set_title("accuracy vs cost")
    ax.set_ylim(0, 100)
    ax.set_xlim(0, most * 1.25 or 1.0)  # room for the labels
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def warnings(summaries: Sequence[EvalSummary]) -> list[str]:
    """What makes a comparison unfair: different problems, unfinished runs."""
    notes = []
    if len({s.settings.problems_digest for s in summaries}) > 1:
        notes.append("the runs cover different problem sets; accuracies are not directly comparable")
    notes += [f"{s.name} is unfinished ({s.results.problems}/{s.settings.problems} problems)"
              for s in summaries if not s.complete]
    return notes
