"""Starting a chat session: settings, consoles, the model (loaded once, with a spinner), the
thread (new or resumed), then the interactive loop or the piped reader."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from rich.console import Console

from studyhall.errors import InputError


def run(
    *,
    graph: str | None = None,
    model: str | None = None,
    adapter: str | None = None,
    thread: str | None = None,
    plain: bool = False,
    steps: bool = True,
    max_tokens: int | None = None,
    options: list[str] | None = None,
) -> int:
    """Returns the exit code: 0, or 1 when a piped question failed."""
    from studyhall.cli import parse_options
    from studyhall.config import load_settings
    from studyhall.graphs.registry import graph_module

    settings = load_settings(model=model, graph=graph, adapter=adapter)
    graph_module(settings.graph)  # an unknown graph fails now, naming the known ones
    graph_options = parse_options(options)
    if max_tokens:
        graph_options["max_tokens"] = max_tokens
    if thread is not None and not thread.strip():
        raise InputError("the thread id is empty", hint="--thread ID, or leave it out for a new thread")
    interactive = not plain and sys.stdin.isatty() and sys.stdout.isatty()
    return asyncio.run(_main(settings, graph_options, thread.strip() if thread else None,
                             plain=plain, steps=steps, interactive=interactive))


async def _main(settings: Any, graph_options: dict[str, Any], thread: str | None, *,
                plain: bool, steps: bool, interactive: bool) -> int:
    from studyhall.chat.plain import PlainView, run_piped
    from studyhall.chat.session import ChatSession, repl, resolve_adapter

    out = Console(highlight=False)
    msg = Console(highlight=False, stderr=True) if plain else out

    def plain_view() -> PlainView:
        return PlainView(lambda line: (sys.stdout.write(line + "\n"), sys.stdout.flush()))

    session = ChatSession(settings, out=out, msg=msg, graph=settings.graph, thread_id=thread, steps=steps,
                          graph_options=graph_options, view_factory=plain_view if plain else None)
    try:
        if settings.adapter:
            session.adapter = resolve_adapter(settings.adapter, settings)
        await session.load_model(settings.model)
        resumed = thread is not None and bool(await session.turns())
        if interactive:
            msg.print(f"[bold]studyhall chat[/] · {session.status_line()}")
            msg.print("[dim]Ask a math word problem. /help for commands, Ctrl-C stops an answer, Ctrl-D quits.[/]")
        if resumed:
            await session.show_resumed()
        elif interactive:
            msg.print(f"[dim]new thread {session.thread_id} (resume it later with --thread {session.thread_id})[/]")
        if interactive:
            return await repl(session)
        return await run_piped(session, sys.stdin.buffer)
    finally:
        session.close()
        await asyncio.to_thread(session.stop_models)
