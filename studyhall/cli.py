"""The ``studyhall`` command. Heavy imports happen inside commands so --help is instant."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from studyhall.chat.cli import chat as chat_command
from studyhall.evals.cli import app as eval_app
from studyhall.memory.cli import app as memory_app
from studyhall.training.cli import app as train_app
from studyhall.training.loop.cli import app as loop_app

app = typer.Typer(
    name="studyhall",
    help="Multi-agent reasoning for math word problems: solve, chat, eval, train, loop.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(help="Packaged and configured models.", invoke_without_command=True)
app.add_typer(models_app, name="models")
app.command("chat")(chat_command)
app.add_typer(memory_app, name="memory")
app.add_typer(loop_app, name="loop")
app.add_typer(eval_app, name="eval")
app.add_typer(train_app, name="train")

ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Model spec (see `studyhall models`).")]
GraphOpt = Annotated[str | None, typer.Option("--graph", "-g", help="Reasoning graph (see `studyhall graphs`).")]
AdapterOpt = Annotated[str | None, typer.Option("--adapter", "-a", help="LoRA adapter: a folder or a registered NAME.")]


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def _settings(**overrides: Any) -> Any:
    from studyhall.config import load_settings

    return load_settings(**overrides)


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """KEY=VALUE strings; values are read as JSON when they parse (8, 0.7, true, [..]), else text."""
    import json

    from studyhall.errors import InputError

    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"bad option {pair!r}", hint="use KEY=VALUE, e.g. -o k=8")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def _run(coro: Any) -> Any:
    import asyncio

    return asyncio.run(coro)


@app.command()
def solve(
    question: Annotated[str, typer.Argument(help="The problem text; '-' reads it from stdin.")],
    model: ModelOpt = None,
    graph: GraphOpt = None,
    adapter: AdapterOpt = None,
    max_tokens: Annotated[int | None, typer.Option(help="Completion budget per agent call.")] = None,
    gold: Annotated[str | None, typer.Option(help="The known answer, to mark the result.")] = None,
    thread: Annotated[str | None, typer.Option(help="Thread id: resume or reuse a run.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the Trajectory as JSON.")] = False,
    steps: Annotated[bool, typer.Option(help="Show each agent step.")] = True,
    option: Annotated[list[str] | None, typer.Option(
        "--option", "-o", help="A graph option KEY=VALUE (e.g. -o k=8 -o rounds=3); repeatable.")] = None,
) -> None:
    """Solve one problem, printing each agent step and the final answer."""
    if question == "-":
        question = sys.stdin.read()
    from studyhall.graphs.runner import check_question

    check_question(question)
    settings = _settings(model=model, graph=graph, adapter=adapter)
    console = _console()
    from studyhall.api import asolve, load_model
    from studyhall.console import render_answer, render_extras, render_step

    with console.status(f"loading {settings.model} ...", spinner="dots"):
        chat = load_model(settings.model, settings)
        warm = getattr(chat, "warm_up", None)
        if warm:
            warm()
    options = parse_options(option)
    if max_tokens:
        options["max_tokens"] = max_tokens

    def on_update(node: str, update: dict[str, Any]) -> None:
        if steps and not as_json:
            for step in update.get("steps") or []:
                render_step(console, node, step)

    traj = _run(asolve(question, settings.graph, chat, gold=gold, thread_id=thread,
                       settings=settings, on_update=on_update, **options))
    if as_json:
        print(traj.model_dump_json(indent=2))
    else:
        render_extras(console, traj)
        render_answer(console, traj)
    if traj.error:
        raise typer.Exit(1)


@app.command()
def demo(
    data: Annotated[Path | None, typer.Option(help="GSM8K folder (train.jsonl/test.jsonl).")] = None,
    count: Annotated[int, typer.Option("--count", "-n", help="How many test questions.")] = 3,
    model: ModelOpt = None,
    graph: GraphOpt = None,
) -> None:
    """Solve the first GSM8K test questions on the default model, showing every agent step."""
    from studyhall.api import asolve, load_model
    from studyhall.console import render_answer, render_step
    from studyhall.evals.datasets import load_gsm8k

    settings = _settings(model=model, graph=graph)
    console = _console()
    problems = load_gsm8k(data, "test", settings.cache_dir).problems[:count]
    with console.status(f"loading {settings.model} (prepared once, then cached) ...", spinner="dots"):
        chat = load_model(settings.model, settings)
        warm = getattr(chat, "warm_up", None)
        if warm:
            warm()
    right = 0
    for i, p in enumerate(problems, 1):
        console.rule(f"[bold]GSM8K test {i}/{len(problems)}  ({p.id})")
        console.print(p.question)
        traj = _run(asolve(p.question, settings.graph, chat, gold=p.answer, settings=settings,
                           on_update=lambda node, u: [render_step(console, node, s) for s in u.get("steps") or []]))
        render_answer(console, traj)
        right += bool(traj.correct)
    console.rule()
    console.print(f"[bold]{right}/{len(problems)} correct[/] with graph {settings.graph!r} on {settings.model}")


@app.command()
def graphs() -> None:
    """List the reasoning graphs, one line each."""
    from studyhall.graphs.registry import describe

    for name, desc in describe().items():
        typer.echo(f"{name:10s} {desc}")


@models_app.callback()
def models_list(ctx: typer.Context) -> None:
    """List model specs with their status (installed, prepared, size)."""
    if ctx.invoked_subcommand:
        return
    from rich.table import Column, Table

    from studyhall.serving.packaged import PACKAGED_MODELS, status

    settings = _settings()
    table = Table(Column("spec", no_wrap=True), "installed", "prepared", "size", "description")
    for name in PACKAGED_MODELS:
        st = status(name, settings.cache_dir)
        size = st["prepared_bytes"] or st["source_bytes"]
        table.add_row(st["spec"], "yes" if st["installed"] else f"no ({st['install']})",
                      "yes" if st["prepared"] else "no", f"{size / 1e6:.0f} MB" if size else "-", st["description"])
    console = _console()
    console.print(table)
    console.print(f"default: {settings.model}   other forms: hf:PATH, openai:URL#MODEL, vllm:PATH, fake:SCRIPT.json")


@models_app.command("prepare")
def models_prepare(
    spec: Annotated[str | None, typer.Argument(help="Model spec; default: the configured model.")] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if the cache is valid.")] = False,
) -> None:
    """Do the one-time work for a packaged model: join, verify sha256, convert, cache."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from studyhall.serving.packaged import prepare
    from studyhall.serving.specs import parse_spec

    settings = _settings()
    parsed = parse_spec(spec or settings.model)
    if parsed.kind != "packaged":
        typer.echo(f"{parsed} needs no preparation")
        return
    columns = (SpinnerColumn(), TextColumn("{task.description:8s}"), BarColumn(),
               TextColumn("{task.fields[detail]}"), TimeElapsedColumn())
    with Progress(*columns) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage == "join":
                detail = f"{done / 1e6:.0f}/{total / 1e6:.0f} MB (sha256)"
            elif stage in ("convert", "save"):
                detail, total = ("done" if done else "dequantizing GGUF..." if stage == "convert" else "writing..."), None
            else:
                detail = f"{done}/{total} files"
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total, detail=detail)
            bar.update(tasks[stage], completed=done, total=total if total is not None else None, detail=detail)
            if stage == "convert" and done:
                for name in ("convert", "save"):
                    if name in tasks:
                        bar.update(tasks[name], total=1, completed=1, detail="done")

        path = prepare(parsed.target, settings.cache_dir, progress=progress, force=force)
    typer.echo(f"prepared {parsed} -> {path}")


@app.command()
def serve(
    model: ModelOpt = None,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    name: Annotated[str | None, typer.Option(help="Model name clients use; default: the spec.")] = None,
    backend: Annotated[str, typer.Option(help="studyhall: our server over any model spec; vllm: exec "
                                         "`vllm serve` on the model's weights (see studyhall.serving.vllm_serve).")] = "studyhall",
    adapter: Annotated[list[str] | None, typer.Option(
        "--adapter", "-a", help="LoRA adapter. studyhall backend: one folder or registered NAME, served by default; "
        "vllm backend: NAME=PATH (repeatable), chosen per request by NAME.")] = None,
    dry_run: Annotated[bool, typer.Option(help="vllm backend: print the vllm serve command instead of running it.")] = False,
) -> None:
    """Serve a model over an OpenAI-compatible HTTP API (shareable by many processes)."""
    if backend == "vllm":
        import shlex

        from studyhall.serving.vllm_serve import exec_serve, parse_adapters, serve_command

        settings = _settings(model=model)
        cmd = serve_command(settings.model, settings, name=name, host=host, port=port,
                            adapters=parse_adapters(adapter or []))
        typer.echo(shlex.join(cmd), err=not dry_run)
        if not dry_run:
            exec_serve(cmd)
        return
    if backend != "studyhall":
        from studyhall.errors import InputError

        raise InputError(f"unknown serve backend {backend!r}", hint="use --backend studyhall or --backend vllm")
    from studyhall.api import load_model
    from studyhall.serving.openai_server import serve as run_server

    if adapter and len(adapter) > 1:
        from studyhall.errors import InputError

        raise InputError("the studyhall backend serves one adapter", hint="give --adapter once, or use --backend vllm")
    settings = _settings(model=model, adapter=adapter[0] if adapter else None)
    chat = load_model(settings.model, settings)
    warm = getattr(chat, "warm_up", None)
    if warm:
        warm()
    served = name or settings.model
    with_adapter = f" with adapter {settings.adapter}" if settings.adapter else ""
    typer.echo(f"serving {settings.model}{with_adapter} as {served!r} on http://{host}:{port}/v1", err=True)
    run_server(chat, served, host, port)


def main() -> None:
    """Entry point: StudyhallErrors print as one message (and a hint), not a traceback."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from studyhall.errors import StudyhallError

    try:
        app()
    except StudyhallError as exc:
        typer.secho(f"error: {exc.message}", fg="red", err=True)
        if exc.hint:
            typer.echo(f"  hint: {exc.hint}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
