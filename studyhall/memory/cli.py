"""``studyhall memory``: look into episodic memory, search it, move it, prune it.

    studyhall memory stats
    studyhall memory search "text" [-k 5] [--solved]
    studyhall memory export FILE
    studyhall memory import FILE
    studyhall memory forget --before 2025-01-01 [--yes]

The memory is ``--path`` / ``--url`` when given, else ``memory_url`` / ``home/memory`` from
the settings. Nothing heavy is imported until a command runs.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from studyhall.errors import InputError

app = typer.Typer(help="Episodic memory: solved problems kept and found again.", no_args_is_help=True)


def _open(ctx: typer.Context) -> Any:
    from studyhall.memory.store import EpisodicMemory

    opts = ctx.obj or {}
    return EpisodicMemory.open(path=opts.get("path"), url=opts.get("url"), collection=opts.get("collection", "episodes"))


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


@app.callback()
def memory(
    ctx: typer.Context,
    path: Annotated[Path | None, typer.Option(help="Memory folder (embedded chroma); default: home/memory.")] = None,
    url: Annotated[str | None, typer.Option(help="chroma server URL; default: the memory_url setting.")] = None,
    collection: Annotated[str, typer.Option(help="Collection name.")] = "episodes",
) -> None:
    """Episodic memory: solved problems kept and found again."""
    ctx.obj = {"path": path, "url": url, "collection": collection}


@app.command()
def stats(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """How many episodes, how many solved, by graph, agent and model."""
    st = _open(ctx).stats()
    if as_json:
        print(json.dumps(st, indent=2))
        return
    console = _console()
    console.print(f"[bold]{st['location']}[/]  collection {st['collection']}  "
                  f"model {st['embedding_model']} ({st['embedding_dim']} dims)")
    console.print(f"episodes {st['episodes']}: correct {st['correct']}, wrong {st['wrong']}, "
                  f"unknown {st['unknown']}   from {st['oldest'] or '-'} to {st['newest'] or '-'}")
    for key in ("by_graph", "by_agent", "by_model"):
        if st[key]:
            console.print(f"{key[3:]:6s} " + ", ".join(f"{k} {v}" for k, v in st[key].items()))


@app.command()
def search(
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(help="A question (or any text) to find similar episodes for.")],
    k: Annotated[int, typer.Option("-k", help="How many.")] = 5,
    solved: Annotated[bool, typer.Option(help="Only correctly solved episodes.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """The episodes whose questions are most similar to TEXT."""
    if k < 1:
        raise InputError(f"-k must be at least 1, got {k}")
    hits = _open(ctx).search(text, k, solved_only=solved)
    if as_json:
        for h in hits:
            print(json.dumps({"similarity": round(h.similarity, 4)} | h.episode.model_dump(mode="json")))
        return
    from rich.table import Table

    table = Table("sim", "correct", "answer", "agent", "question")
    for h in hits:
        mark = {True: "yes", False: "no", None: "?"}[h.episode.correct]
        table.add_row(f"{h.similarity:.3f}", mark, h.episode.answer or "-", h.episode.agent, h.episode.question)
    console = _console()
    console.print(table if hits else "memory is empty")


@app.command("export")
def export_(ctx: typer.Context, file: Annotated[Path, typer.Argument(help="JSONL file to write.")]) -> None:
    """Write every episode to FILE as JSON lines."""
    n = _open(ctx).export_jsonl(file)
    typer.echo(f"exported {n} episodes to {file}")


@app.command("import")
def import_(ctx: typer.Context, file: Annotated[Path, typer.Argument(help="JSONL file of episodes.")]) -> None:
    """Add the episodes in FILE (validated first: one bad line imports nothing)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    mem = _open(ctx)
    with Progress(TextColumn("embedding + writing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True) as bar:
        task = bar.add_task("import", total=None)
        n = mem.import_jsonl(file, progress=lambda done, total: bar.update(task, completed=done, total=total))
    typer.echo(f"imported {n} episodes from {file}; memory holds {mem.count()}")


@app.command()
def remember(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="JSONL of trajectories, e.g. an eval run's trajectories.jsonl.")],
) -> None:
    """Add finished runs from FILE as episodes (one per trajectory with a solution); every
    line is validated first, so one bad line adds nothing."""
    from studyhall.errors import InputError
    from studyhall.records import Trajectory

    if not file.is_file():
        raise InputError(f"no trajectories file at {file}")
    trajs = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            trajs.append(Trajectory.model_validate_json(line))
        except ValueError as exc:
            first = str(exc).splitlines()[0]
            raise InputError(f"{file} line {number} is not a trajectory: {first}", hint="nothing was added") from None
    mem = _open(ctx)
    with _console().status(f"embedding {len(trajs)} solutions ...", spinner="dots"):
        n = mem.add_trajectories(trajs)
    solved = sum(bool(t.correct) for t in trajs)
    typer.echo(f"remembered {n} episodes ({solved} correct) from {file}; memory holds {mem.count()}")


def _date(value: str) -> datetime:
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(f"--before {value!r} is not a date",
                         hint="use YYYY-MM-DD or an ISO time like 2025-01-31T12:00") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@app.command()
def forget(
    ctx: typer.Context,
    before: Annotated[str, typer.Option(help="Forget episodes created before this date (UTC unless given).")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete the episodes created before a date."""
    when = _date(before)
    if not yes:
        typer.confirm(f"forget every episode created before {when.isoformat()}?", abort=True)
    n = _open(ctx).forget(before=when)
    typer.echo(f"forgot {n} episodes created before {when.isoformat()}")
