"""The chat session: what it holds (model, graph, adapter, thread), asking a question with
live rendering, the slash commands, and the interactive prompt_toolkit loop.

Ctrl-C during an answer cancels the asyncio task that runs the graph; the cancellation
travels down to the model call (the transformers backend frees the request's batch slot) and
the prompt comes back. Ctrl-D or /quit ends the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from studyhall.chat.render import TurnView
from studyhall.chat.thread import Turn, build_thread_graph, chat_db, new_thread_id, thread_turns
from studyhall.config import Settings
from studyhall.errors import BackendError, InputError, StudyhallError
from studyhall.records import Trajectory

T = TypeVar("T")


class Feedback(BaseModel):
    """A person's verdict on an answer, kept in the trajectory's ``metadata["feedback"]``."""

    version: int = 1
    label: Literal["right", "wrong"]
    correct_answer: str | None = None
    source: str = "chat"
    thread_id: str
    at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())


COMMANDS: dict[str, str] = {
    "/graph NAME": "answer with another reasoning graph (see /graphs)",
    "/graphs": "list the reasoning graphs",
    "/model [SPEC]": "show the model, or load another (packaged:NAME, hf:PATH, openai:URL#MODEL, fake:SCRIPT.json)",
    "/adapter [PATH|NAME|off]": "show, bind or unbind a LoRA adapter on every model call",
    "/memory [QUERY]": "similar solved problems from episodic memory (default: the last question)",
    "/feedback right|wrong [ANSWER]": "label the last answer; stores a labelled trajectory for training",
    "/thread new|list|resume ID": "start, list or resume a conversation thread",
    "/steps on|off": "show or hide each agent's steps",
    "/help": "this help",
    "/quit": "leave (Ctrl-D works too)",
}
INPUT_HELP = (
    "Enter sends. A line ending in \\ continues on the next line; Esc then Enter inserts a new line.\n"
    "Up/Down walk through earlier inputs (kept across sessions). Ctrl-C stops an answer; Ctrl-D quits."
)


def clean_text(text: str) -> tuple[str, bool]:
    """Text safe to encode as UTF-8, and whether anything had to be replaced. Terminal input
    decodes invalid bytes to surrogates (surrogateescape); they become U+FFFD here."""
    try:
        text.encode("utf-8")
        return text, False
    except UnicodeEncodeError:
        try:
            raw = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raw = text.encode("utf-8", "replace")
        return raw.decode("utf-8", "replace"), True


class ChatSession:
    """One person's conversation: a model, a graph, an optional adapter and a thread."""

    def __init__(
        self,
        settings: Settings,
        *,
        out: Console,
        msg: Console,
        graph: str,
        thread_id: str | None = None,
        steps: bool = True,
        graph_options: dict[str, Any] | None = None,
        view_factory: Callable[[], Any] | None = None,
    ) -> None:
        from studyhall.graphs.checkpoint import open_checkpointer

        self.settings = settings
        self.out, self.msg = out, msg
        self.graph_name = graph
        self.thread_id = thread_id or new_thread_id()
        self.steps = steps
        self.graph_options = dict(graph_options or {})
        self.view_factory = view_factory or (lambda: TurnView(self.out, steps=self.steps))
        self.model: Any = None
        self.model_spec = settings.model
        self.adapter: str | None = None
        self.saver = open_checkpointer(chat_db(settings.home))
        self.chat: Any = None
        self.last: Trajectory | None = None
        self._store: Any = None
        self._memory: Any = None
        self.failures = 0  # questions that ended in an error (piped mode's exit code)
        self._loaded: list[Any] = []  # models this session loaded (their engines stop at exit)

    # ------------------------------------------------------------------ model and graph
    async def load_model(self, spec: str) -> None:
        """Load (once, behind a spinner) and make it current."""
        from studyhall.serving.loader import load_chat_model

        def load() -> Any:
            model = load_chat_model(spec, self.settings)
            warm = getattr(model, "warm_up", None)
            if warm:
                warm()
            return model

        with self.msg.status(f"loading {spec} ...", spinner="dots"):
            model = await asyncio.to_thread(load)
        self.model, self.model_spec = model, spec
        self._loaded.append(model)
        self.rebuild()

    def bound_model(self) -> Any:
        return self.model.bind(adapter=self.adapter) if self.adapter else self.model

    def rebuild(self) -> None:
        """Recompile the chat graph after the graph, model or adapter changed."""
        from studyhall.graphs.registry import build_graph
        from studyhall.graphs.runner import model_name

        model = self.bound_model()
        inner = build_graph(self.graph_name, model, checkpointer=False, **self.graph_options)
        self.chat = build_thread_graph(inner, graph_name=self.graph_name, model_name=model_name(model),
                                       adapter=self.adapter, checkpointer=self.saver,
                                       on_trajectory=self._keep)

    def _keep(self, traj: Trajectory) -> None:
        self.last = traj
        self.store().put(traj)

    def store(self) -> Any:
        if self._store is None:
            from studyhall.memory.trajectory_store import TrajectoryStore

            self._store = TrajectoryStore(self.settings.trajectory_db)
        return self._store

    def close(self) -> None:
        self.saver.close()
        if self._store is not None:
            self._store.close()

    def stop_models(self) -> None:
        """Stop the generation threads of the models this session loaded, so the process never
        exits in the middle of a forward pass (a stopped answer's last step may still run)."""
        for model in self._loaded:
            engine = getattr(model, "engine", None)
            close = getattr(engine, "close", None)
            if callable(close):
                close()
        self._loaded.clear()

    # ------------------------------------------------------------------ asking
    async def ask(self, question: str, view: Any) -> Trajectory:
        """Run one question on the current thread, feeding every stream event to ``view``."""
        self.last = None
        config = {"configurable": {"thread_id": self.thread_id}, "recursion_limit": 200}
        view.start()
        stopped = False
        try:
            async for ns, mode, chunk in self.chat.astream(
                {"question": question}, config, stream_mode=["messages", "updates", "tasks"], subgraphs=True,
            ):
                view.event(ns, mode, chunk)
        except asyncio.CancelledError:
            stopped = True
            raise
        finally:
            view.close(stopped=stopped)
        if self.last is None:  # pragma: no cover - the answer node always reports
            raise StudyhallError("the graph finished without an answer record")
        return self.last

    async def turns(self, thread_id: str | None = None) -> list[Turn]:
        return await thread_turns(self.chat, thread_id or self.thread_id)

    # ------------------------------------------------------------------ messages
    def info(self, text: Any) -> None:
        self.msg.print(text)

    def error(self, exc: BaseException) -> None:
        """A clear message; the session goes on."""
        if isinstance(exc, StudyhallError):
            self.msg.print(f"[red]error:[/] {escape(exc.message)}")
            if exc.hint:
                self.msg.print(f"  [dim]hint: {escape(exc.hint)}[/]")
            elif isinstance(exc, BackendError):
                self.msg.print("  [dim]hint: the session goes on; try again, or /model to switch models[/]")
        else:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            self.msg.print(f"[red]error:[/] {type(exc).__name__}: {escape(first)}")
            self.msg.print("  [dim]hint: the session goes on; try again, or /model to switch models[/]")

    def status_line(self) -> str:
        """graph · model · adapter · thread · steps (paths shortened to their last part)."""
        kind, sep, target = self.model_spec.partition(":")
        model = f"{kind}:{Path(target).name}" if sep and "/" in target else self.model_spec
        adapter = Path(self.adapter).name if self.adapter else "none"
        return (f"graph {self.graph_name} · model {model} · adapter {adapter}"
                f" · thread {self.thread_id} · steps {'on' if self.steps else 'off'}")

    # ------------------------------------------------------------------ slash commands
    async def command(self, line: str) -> bool:
        """Run a slash command; False means quit."""
        name, _, arg = line.strip().partition(" ")
        name, arg = name.lower(), arg.strip()
        handlers: dict[str, Callable[[str], Awaitable[None]]] = {
            "/graph": self._graph, "/graphs": self._graphs, "/model": self._model, "/adapter": self._adapter,
            "/memory": self._memory_cmd, "/feedback": self._feedback, "/thread": self._thread,
            "/steps": self._steps, "/help": self._help,
        }
        if name in ("/quit", "/exit", "/q"):
            return False
        handler = handlers.get(name)
        if handler is None:
            self.info(f"[yellow]unknown command {escape(name)}[/] — commands: "
                      + " ".join(c.split()[0] for c in COMMANDS) + "  (/help explains them)")
            return True
        try:
            await handler(arg)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failed command (bad spec, memory down) never ends the session
            self.error(exc)
        return True

    async def _help(self, _: str) -> None:
        from rich.table import Table

        table = Table.grid(padding=(0, 2))
        for command, what in COMMANDS.items():
            table.add_row(Text(command, style="bold", no_wrap=True), what)
        self.info(table)
        self.info(Text(INPUT_HELP, style="dim"))
        self.info(Text(self.status_line(), style="dim"))

    async def _graphs(self, _: str) -> None:
        from studyhall.graphs.registry import describe

        for name, desc in describe().items():
            mark = "*" if name == self.graph_name else " "
            self.info(f"{mark} [bold]{name:9s}[/] {escape(desc)}")

    async def _graph(self, arg: str) -> None:
        from studyhall.graphs.registry import graph_module

        if not arg:
            self.info(f"graph: [bold]{self.graph_name}[/]  (/graph NAME to switch, /graphs to list)")
            return
        graph_module(arg)  # InputError naming the graphs if unknown
        previous, self.graph_name = self.graph_name, arg
        try:
            self.rebuild()
        except Exception:
            self.graph_name = previous
            self.rebuild()
            raise
        self.info(f"graph: [bold]{arg}[/]")

    async def _model(self, arg: str) -> None:
        if not arg:
            self.info(f"model: [bold]{escape(self.model_spec)}[/]  adapter: {escape(self.adapter or 'none')}"
                      "  (/model SPEC to switch)")
            return
        await self.load_model(arg)
        self.info(f"model: [bold]{escape(arg)}[/]")

    async def _adapter(self, arg: str) -> None:
        if not arg:
            self.info(f"adapter: [bold]{escape(self.adapter or 'none')}[/]  (/adapter PATH|NAME|off)")
            return
        if arg.lower() in ("off", "none"):
            self.adapter = None
            self.rebuild()
            self.info("adapter: none")
            return
        self.adapter = resolve_adapter(arg, self.settings)
        self.rebuild()
        self.info(f"adapter: [bold]{escape(self.adapter)}[/] (bound on every model call)")

    async def _memory_cmd(self, arg: str) -> None:
        query = arg or (self.last.question if self.last else "")
        if not query:
            turns = await self.turns()
            query = turns[-1].question if turns else ""
        if not query:
            raise InputError("nothing to look up", hint="/memory QUERY, or ask a question first")
        from studyhall.memory.store import EpisodicMemory

        with self.msg.status("searching memory ...", spinner="dots"):
            if self._memory is None:
                self._memory = await asyncio.to_thread(EpisodicMemory.open, self.settings)
            found = await asyncio.to_thread(self._memory.similar_solved, query, 3)
        if not found:
            self.info("no similar solved problems in memory yet")
            return
        for i, item in enumerate(found, 1):
            self.info(f"[bold]{i}.[/] {escape(str(item.get('question', '')).strip())}\n"
                      f"   [green]Answer: {escape(str(item.get('answer')))}[/]")

    async def _feedback(self, arg: str) -> None:
        from studyhall.tools.answers import answers_match, normalize_number

        label, _, given = arg.partition(" ")
        label, given = label.lower(), given.strip()
        if label not in ("right", "wrong"):
            raise InputError("say /feedback right, or /feedback wrong [the correct answer]")
        traj = self.last
        if traj is None:
            turns = await self.turns()
            traj = self.store().get(turns[-1].trajectory_id) if turns else None
        if traj is None:
            raise InputError("no answer to give feedback on yet", hint="ask a question first")
        gold = normalize_number(given) if given else None
        if given and gold is None:
            raise InputError(f"{given!r} is not a number", hint="/feedback wrong 72")
        if label == "right":
            if gold is not None and not answers_match(traj.final_answer, gold):
                raise InputError(f"the answer was {traj.final_answer}, not {gold}",
                                 hint=f"/feedback wrong {gold}")
            gold, correct = normalize_number(traj.final_answer), True
            if gold is None:
                raise InputError("the last reply had no answer to call right", hint="/feedback wrong ANSWER")
        else:
            if gold is not None and answers_match(traj.final_answer, gold):
                raise InputError(f"{gold} is the answer that was given", hint="/feedback right")
            correct = False
        record = Feedback(label=label, correct_answer=gold, thread_id=self.thread_id)
        labelled = traj.model_copy(update={
            "gold_answer": gold, "correct": correct, "reward": 1.0 if correct else 0.0,
            "metadata": {**traj.metadata, "feedback": record.model_dump(mode="json")},
        })
        self.store().put(labelled)
        if self.last is not None and self.last.id == labelled.id:
            self.last = labelled
        what = "right" if correct else "wrong" + (f", correct answer {gold}" if gold is not None else "")
        self.info(f"feedback stored: {what} [dim](trajectory {labelled.id[:12]} in "
                  f"{escape(str(self.settings.trajectory_db))})[/]")

    async def _thread(self, arg: str) -> None:
        action, _, rest = arg.partition(" ")
        action, rest = action.lower(), rest.strip()
        if action in ("", "show"):
            turns = await self.turns()
            self.info(f"thread [bold]{self.thread_id}[/] · {len(turns)} question(s)  (/thread new|list|resume ID)")
        elif action == "new":
            self.thread_id = rest or new_thread_id()
            self.last = None
            self.info(f"new thread [bold]{escape(self.thread_id)}[/]")
        elif action == "list":
            from rich.table import Table

            ids = await asyncio.to_thread(self.saver.thread_ids)
            if not ids:
                self.info("no threads yet")
                return
            table = Table.grid(padding=(0, 2))
            for tid in ids[:20]:  # most recent first
                turns = await self.turns(tid)
                last = turns[-1].question.replace("\n", " ") if turns else ""
                table.add_row("*" if tid == self.thread_id else " ", Text(tid, style="bold"),
                              f"{len(turns)} question(s)", Text(last, style="dim", no_wrap=True, overflow="ellipsis"))
            self.info(table)
        elif action == "resume":
            if not rest:
                raise InputError("which thread?", hint="/thread list shows them; /thread resume ID")
            ids = await asyncio.to_thread(self.saver.thread_ids)
            if rest not in ids:
                raise InputError(f"no thread {rest!r}", hint="/thread list shows the saved threads")
            self.thread_id, self.last = rest, None
            await self.show_resumed()
        else:
            raise InputError(f"unknown /thread action {action!r}", hint="/thread new | list | resume ID")

    async def show_resumed(self) -> None:
        turns = await self.turns()
        self.info(f"thread [bold]{escape(self.thread_id)}[/] resumed · {len(turns)} earlier question(s)")
        for t in turns[-3:]:
            q = t.question.replace("\n", " ")
            q = q if len(q) <= 70 else q[:67] + "..."
            self.info(f"  [dim]{escape(q)}[/] → [green]{escape(str(t.answer))}[/]")

    async def _steps(self, arg: str) -> None:
        if arg.lower() in ("on", "off"):
            self.steps = arg.lower() == "on"
        elif arg:
            raise InputError("say /steps on or /steps off")
        self.info(f"steps: {'on' if self.steps else 'off'}")

    # ------------------------------------------------------------------ one input line
    async def handle(self, text: str) -> bool:
        """A line (or block) of input: a command, a question or nothing. False means quit."""
        text, replaced = clean_text(text)
        if replaced:
            self.info("[yellow]warning:[/] the input had invalid UTF-8 bytes; they were replaced with \ufffd")
        stripped = text.strip()
        if not stripped:
            return True
        if stripped.startswith("/"):
            return await self.command(stripped)
        view = self.view_factory()
        try:
            traj = await self.ask(stripped, view)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.error(exc)
            self.failures += 1
            return True
        view.answer(traj)
        return True


def resolve_adapter(value: str, settings: Settings) -> str:
    """A registered adapter name (``settings.home/adapters/NAME``) or a folder, as the path to bind."""
    from studyhall.training.adapters import resolve_adapter as registry_resolve

    return str(registry_resolve(value, settings))


async def interruptible(coro: Awaitable[T]) -> tuple[T | None, bool]:
    """Run ``coro`` as a task that Ctrl-C (SIGINT) cancels; returns (result, stopped)."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(coro)
    installed = False
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, task.cancel)
        installed = True
    try:
        return await task, False
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if not task.cancelled() or (current is not None and current.cancelling()):
            raise  # we were cancelled ourselves, not stopped by Ctrl-C
        return None, True
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGINT)


async def repl(session: ChatSession) -> int:
    """The interactive loop: prompt_toolkit input, rich output, Ctrl-C stops an answer."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory
    from prompt_toolkit.key_binding import KeyBindings

    keys = KeyBindings()

    @keys.add("enter")
    def _enter(event: Any) -> None:
        buf = event.current_buffer
        if buf.document.is_cursor_at_the_end and buf.text.endswith("\\"):
            buf.delete_before_cursor(1)
            buf.insert_text("\n")
        else:
            buf.validate_and_handle()

    @keys.add("escape", "enter")
    def _newline(event: Any) -> None:
        event.current_buffer.insert_text("\n")

    session.settings.home.mkdir(parents=True, exist_ok=True)
    prompt = PromptSession(
        history=FileHistory(str(session.settings.home / "chat_history.txt")),
        multiline=True, key_bindings=keys, prompt_continuation=lambda width, *_: "." * (width - 1) + " ",
        bottom_toolbar=lambda: " " + session.status_line() + " · /help",
        enable_suspend=True,
    )
    while True:
        try:
            line = await prompt.prompt_async(f"{session.graph_name}> ")
        except KeyboardInterrupt:  # Ctrl-C at the prompt: drop the line, stay
            continue
        except EOFError:  # Ctrl-D
            break
        try:
            keep_going, stopped = await interruptible(session.handle(line))
        except Exception as exc:  # pragma: no cover - handle() reports its own errors
            session.error(exc)
            continue
        if stopped:
            session.info("[yellow]stopped[/] — back at the prompt")
        elif keep_going is False:
            break
    session.info("bye")
    return 0
