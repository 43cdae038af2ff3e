"""``studyhall eval`` (run an evaluation) and ``studyhall eval compare`` (compare runs).

Only typer is imported here; the harness loads inside the commands so --help stays instant.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="Evaluate a graph on GSM8K or any JSONL set (resumable), or compare runs.",
    invoke_without_command=True,
    no_args_is_help=False,
)


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(highlight=False, stderr=stderr)


def _options(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` graph options; values are JSON when they parse (k=8 -> 8), else text."""
    from studyhall.errors import InputError

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"bad graph option {pair!r}", hint="use --option KEY=VALUE, e.g. --option k=8")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text.split("/")[-1]).strip("-")[:40] or "run"


@app.callback()
def run(
    ctx: typer.Context,
    graph: Annotated[str | None, typer.Option("--graph", "-g", help="Reasoning graph (see `studyhall graphs`).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model spec (see `studyhall models`).")] = None,
    adapter: Annotated[str | None, typer.Option(help="LoRA adapter: a folder or registered NAME (a served name for openai: models).")] = None,
    data: Annotated[Path | None, typer.Option(help="A JSONL file, or a GSM8K folder (train.jsonl/test.jsonl). Default: GSM8K.")] = None,
    split: Annotated[str, typer.Option(help="GSM8K split.")] = "test",
    question_field: Annotated[str, typer.Option(help="JSONL field with the question.")] = "question",
    answer_field: Annotated[str, typer.Option(help="JSONL field with the answer (a number, or GSM8K '#### N').")] = "answer",
    limit: Annotated[int | None, typer.Option(min=1, help="First N problems (after --seed's shuffle).")] = None,
    seed: Annotated[int | None, typer.Option(help="Shuffle seed for the subset.")] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Problems in flight; the backend batches them.")] = 16,
    out: Annotated[Path | None, typer.Option(help="Run folder; the same folder resumes. Default: runs/<graph>-<model>-<data>-<limit>.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Completion budget per agent call.")] = None,
    temperature: Annotated[float | None, typer.Option(
        help="Sampling temperature (0 = greedy). Default: the graph's own (greedy; vote samples at 0.7).")] = None,
    system_prompt: Annotated[str | None, typer.Option(help="The student's system prompt, or @FILE.")] = None,
    shots: Annotated[int, typer.Option(min=0, help="Worked GSM8K train examples in each prompt.")] = 0,
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help="Graph option KEY=VALUE (repeatable).")] = None,
    math_verify_timeout: Annotated[float, typer.Option(help="Seconds per math-verify check.")] = 10.0,
    force: Annotated[bool, typer.Option(help="Discard an existing run in --out made with other settings.")] = False,
    progress: Annotated[bool, typer.Option(help="Show the progress bar.")] = True,
) -> None:
    """Evaluate a graph: rows.jsonl (one row per problem), summary.json, a results table.

    Rerun with the same --out to resume a killed run; finished problems are not redone.
    """
    if ctx.invoked_subcommand:
        return
    from studyhall.config import load_settings
    from studyhall.errors import InputError
    from studyhall.evals.harness import run_eval
    from studyhall.evals.report import table

    settings = load_settings(model=model, graph=graph)
    if system_prompt and system_prompt.startswith("@"):
        try:
            system_prompt = Path(system_prompt[1:]).read_text()
        except OSError as exc:
            raise InputError(f"cannot read the system prompt file: {exc}") from None
    if out is None:
        source = data.stem if data else f"gsm8k-{split}"
        out = Path("runs") / f"{settings.graph}-{_slug(settings.model)}-{source}-{limit or 'all'}"
    console = _console()
    summary = run_eval(
        out, data=data, split=split, question_field=question_field, answer_field=answer_field,
        limit=limit, seed=seed, graph=settings.graph, graph_options=_options(option or []),
        model=settings.model, adapter=adapter, temperature=temperature, max_tokens=max_tokens,
        system_prompt=system_prompt, shots=shots, concurrency=concurrency,
        math_verify_timeout=math_verify_timeout, force=force, progress=progress,
        console=_console(stderr=True), settings=settings,
    )
    skipped = summary.settings.skipped
    if skipped:
        first = "; ".join(f"line {s.line}: {s.reason}" for s in skipped[:3])
        console.print(f"[yellow]{len(skipped)} records skipped[/] ({first}{' ...' if len(skipped) > 3 else ''})")
    console.print(table([summary]))
    console.print(f"rows: {out / 'rows.jsonl'}   summary: {out / 'summary.json'}")


@app.command()
def rescore(
    runs: Annotated[list[Path], typer.Argument(help="Run folders made by `studyhall eval --out`.")],
) -> None:
    """Check finished runs' stored responses again with the current checkers (no generation)."""
    from studyhall.evals.harness import rescore as rescore_run
    from studyhall.evals.report import table

    summaries = [rescore_run(run) for run in runs]
    _console().print(table(summaries))


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run folders made by `studyhall eval --out`.")],
    plot: Annotated[Path | None, typer.Option(help="PNG path. Default: compare.png beside the first run.")] = None,
    checker: Annotated[str, typer.Option(help="Checker on the plot's accuracy axis.")] = "math_verify",
) -> None:
    """Compare runs: a table (accuracy per checker, tokens, time) and accuracy-vs-tokens PNG."""
    from studyhall.evals.report import load_summaries, table, warnings
    from studyhall.evals.report import plot as draw

    summaries = load_summaries(runs)
    console = _console()
    console.print(table(summaries))
    for note in warnings(summaries):
        console.print(f"[yellow]note:[/] {note}")
    path = draw(summaries, plot or runs[0].parent / "compare.png", checker=checker)
    console.print(f"plot: {path}")
