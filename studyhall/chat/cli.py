"""``studyhall chat``: the command. Imports nothing heavy until it runs."""

from __future__ import annotations

from typing import Annotated

import typer


def chat(
    graph: Annotated[str | None, typer.Option("--graph", "-g", help="Reasoning graph (see `studyhall graphs`).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model spec (see `studyhall models`).")] = None,
    adapter: Annotated[str | None, typer.Option(help="LoRA adapter (folder or registered name) bound on every call.")] = None,
    thread: Annotated[str | None, typer.Option("--thread", "-t", help="Resume (or start) this conversation thread.")] = None,
    plain: Annotated[bool, typer.Option(help="Read questions from stdin, print only 'Answer: N' lines (for scripts).")] = False,
    steps: Annotated[bool, typer.Option(help="Show each agent's steps as they happen.")] = True,
    max_tokens: Annotated[int | None, typer.Option(help="Completion budget per agent call.")] = None,
    option: Annotated[list[str] | None, typer.Option(
        "--option", "-o", help="A graph option KEY=VALUE (e.g. -o k=8); repeatable.")] = None,
) -> None:
    """Talk to a reasoning graph: ask, follow up, switch graphs and models, give feedback (/help inside)."""
    from studyhall.chat.app import run

    raise typer.Exit(run(graph=graph, model=model, adapter=adapter, thread=thread, plain=plain, steps=steps,
                         max_tokens=max_tokens, options=option))
