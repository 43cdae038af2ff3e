"""`studyhall loop run|status|history|report|rollback`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(help="The scheduled self-improvement loop: collect, train, evaluate, promote.", no_args_is_help=True)
ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="loop.toml")]


def _loop(config: Path, **overrides: Any) -> Any:
    from studyhall.training.loop.config import load_loop_config
    from studyhall.training.loop.runner import Loop

    return Loop(load_loop_config(config, **overrides))


@app.command()
def run(
    config: ConfigOpt = Path("loop.toml"),
    once: Annotated[bool, typer.Option("--once", help="Run one iteration now and exit.")] = False,
    iterations: Annotated[int | None, typer.Option(help="Stop after this many iterations.")] = None,
) -> None:
    """Run iterations on the schedule (a long-lived process), or --once."""
    _loop(config).run(once=once, max_iterations=iterations)


@app.command()
def status(config: ConfigOpt = Path("loop.toml")) -> None:
    """The champion, the current iteration and its finished steps."""
    loop = _loop(config)
    champ = loop.state.champion()
    typer.echo(f"state: {loop.config.state_dir}")
    typer.echo(f"champion: {champ.adapter if champ and champ.adapter else 'base model'}"
               + (f" (iteration {champ.iteration}, dev accuracy {champ.dev_accuracy})" if champ else ""))
    its = loop.state.iterations()
    if not its:
        typer.echo("no iterations yet")
        return
    last = its[-1]
    steps = loop.state.steps(last["n"])
    typer.echo(f"iteration {last['n']}: {last['status']}" + (f", {last['decision']}" if last["decision"] else ""))
    from studyhall.training.loop.runner import STEPS

    for step in STEPS:
        mark = "done" if step in steps else "-"
        typer.echo(f"  {step:9s} {mark}")
    lock = loop.config.state_dir / "loop.lock"
    holder = lock.read_text().strip() if lock.exists() else ""
    typer.echo(f"running: {holder}" if holder else "running: no")


@app.command()
def history(config: ConfigOpt = Path("loop.toml")) -> None:
    """A table: one row per iteration with data sizes, both scores and the decision."""
    from rich.console import Console
    from rich.table import Table

    loop = _loop(config)
    table = Table("iter", "status", "collected", "new problems", "train rows", "candidate", "champion", "p", "decision", "reason")
    for it in loop.state.iterations():
        s = it["summary"]

        def fmt(v: Any) -> str:
            return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

        table.add_row(str(it["n"]), it["status"], fmt(s.get("collected")), fmt(s.get("new_problems")),
                      fmt(s.get("train_rows")), fmt(s.get("candidate_accuracy")), fmt(s.get("champion_accuracy")),
                      fmt(s.get("p_value")), it["decision"] or "-", (it["reason"] or "")[:80])
    console = Console()
    if not console.is_terminal:  # piped: do not squeeze the table into 80 columns
        console = Console(width=200)
    console.print(table)


@app.command()
def report(
    config: ConfigOpt = Path("loop.toml"),
    out: Annotated[Path | None, typer.Option(help="PNG path; default STATE/loop-report.png")] = None,
) -> None:
    """A PNG: dev accuracy of the champion and each candidate by iteration."""
    from studyhall.training.loop.report import plot_history

    loop = _loop(config)
    path = plot_history(loop.state.iterations(), out or loop.config.state_dir / "loop-report.png")
    typer.echo(f"wrote {path}")


@app.command()
def rollback(
    iteration: Annotated[int, typer.Argument(help="Make the champion what it was after this iteration (0 = base).")],
    config: ConfigOpt = Path("loop.toml"),
) -> None:
    """Switch the champion back (atomically); serving picks it up on the next request."""
    champ = _loop(config).rollback(iteration)
    typer.echo(f"champion is now {champ.adapter or 'the base model'}")
