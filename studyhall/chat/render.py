"""Rendering a chat turn as it happens, with plain incremental prints (no cursor tricks, so
it reads the same in a terminal, a dumb terminal, a pipe or a log).

Agents in a graph can generate at the same time (``solve`` runs two reasoners at once), so
output goes through a queue of display items in arrival order: the item at the head streams
live, token by token; items behind it buffer and are printed when their turn comes. A step
that produced no token stream (a tool run, n samples drawn in one call) prints as a panel
when its node finishes. A spinner fills the gaps while nothing is being written.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, RenderableType
from rich.panel import Panel
from rich.text import Text

from studyhall.console import ROLE_STYLE, render_extras, render_step

# graph node -> the agent role that speaks in it (for the header and its colour)
NODE_ROLE = {
    "student": "student", "deep": "student", "intuitive": "student", "sample": "student",
    "knowledge": "knowledge", "verify": "verifier", "pioneer": "pioneer", "observer": "observer",
    "write": "coder", "teacher": "teacher", "check": "student", "seed": "evaluator",
    "expand": "optimizer", "finish": "student",
}


@dataclass
class _Stream:
    """One model call's token stream."""

    key: str
    ns: tuple[str, ...]
    node: str
    started: float
    chunks: list[str] = field(default_factory=list)
    printed: int = 0
    header: bool = False
    done: bool = False
    stopped: bool = False
    claimed: bool = False  # matched to a finished step
    tokens: int | None = None
    ended: float | None = None

    @property
    def text(self) -> str:
        return "".join(self.chunks)


@dataclass
class _Block:
    """Something printed whole: a renderable, or a function that prints to the console."""

    item: RenderableType | Callable[[Console], None]


class TurnView:
    """Shows one turn in a rich Console: agent steps (header, dim body streaming, footer with
    tokens and seconds) and the final answer. ``steps=False`` hides the steps."""

    def __init__(self, console: Console, *, steps: bool = True) -> None:
        self.console = console
        self.steps = steps
        self._queue: deque[_Stream | _Block] = deque()
        self._streams: dict[str, _Stream] = {}
        self._task_start: dict[tuple[tuple[str, ...], str], float] = {}
        self._status: Any = None
        self._at_line_start = True
        self._live = console.is_interactive  # a real terminal: spinners allowed
        self._tokens = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._spin("thinking ...")

    def close(self, *, stopped: bool = False) -> None:
        """End of the turn (finished, stopped or failed): flush what is buffered."""
        for s in self._streams.values():
            if not s.done:
                s.done, s.stopped, s.ended = True, stopped, time.perf_counter()
        if self.steps:
            self._pump(final=True)
        self._quiet()
        if not self._at_line_start:
            self.console.print()
            self._at_line_start = True

    # ------------------------------------------------------------------ events
    def event(self, ns: tuple[str, ...], mode: str, chunk: Any) -> None:
        """One item from ``graph.astream(..., stream_mode=["messages", "updates", "tasks"], subgraphs=True)``."""
        if mode == "messages":
            message, meta = chunk
            self._message(ns, message, meta or {})
        elif mode == "tasks" and isinstance(chunk, dict) and "input" in chunk:
            self._task_start[(ns, chunk.get("name", ""))] = time.perf_counter()
        elif mode == "updates" and ns and isinstance(chunk, dict):
            for node, update in chunk.items():
                if isinstance(update, dict):
                    self._node_done(ns, node, update)

    def _message(self, ns: tuple[str, ...], message: Any, meta: dict[str, Any]) -> None:
        from langchain_core.messages import AIMessageChunk

        node = str(meta.get("langgraph_node", "agent"))
        key = f"{ns}|{message.id or node}"
        s = self._streams.get(key)
        if s is None:
            first_of_node = not any(x.ns == ns and x.node == node for x in self._streams.values())
            started = self._task_start.get((ns, node)) if first_of_node else None
            s = self._streams[key] = _Stream(key, ns, node, started or time.perf_counter())
            if self.steps:
                self._queue.append(s)
        if s.done:
            return
        text = message.text if isinstance(message.text, str) else str(message.content)
        if text:
            s.chunks.append(text)
            self._tokens += 1
        usage = getattr(message, "usage_metadata", None)
        last = getattr(message, "chunk_position", None) == "last"
        if usage or last or not isinstance(message, AIMessageChunk):  # a whole message arrives at once
            s.done, s.ended = True, time.perf_counter()
            if usage:
                s.tokens = int(usage.get("output_tokens", 0))
        if self.steps:
            self._pump()
        else:
            self._spin(f"thinking ... {NODE_ROLE.get(node, node)} · {self._tokens} tokens")

    def _node_done(self, ns: tuple[str, ...], node: str, update: dict[str, Any]) -> None:
        streams = [s for s in self._streams.values() if s.ns == ns and s.node == node and not s.claimed]
        for s in streams:
            s.claimed = True  # a node that runs again (vote's sample rounds) gets new streams
            if not s.done:
                s.done, s.ended = True, time.perf_counter()
        if not self.steps:
            return
        streamed = Counter(s.text.strip() for s in streams)  # each stream shows one step
        for step in update.get("steps") or []:
            text = step.get("completion", "").strip()
            if streamed[text] > 0 and not step.get("tool_calls"):
                streamed[text] -= 1
                if step.get("verdict", "ok") != "ok":
                    self._queue.append(_Block(Text(f"  {step.get('role', node)}: {step['verdict']}", style="red")))
            else:
                self._queue.append(_Block(lambda console, step=step: render_step(console, node, step)))
        self._pump()

    # ------------------------------------------------------------------ output
    def _pump(self, final: bool = False) -> None:
        while self._queue:
            item = self._queue[0]
            if isinstance(item, _Block):
                self._print(item.item)
                self._queue.popleft()
                continue
            if not item.header and (item.chunks or item.done):
                self._print(_header(item.node))
                item.header = True
            if item.printed < len(item.chunks):
                self._write("".join(item.chunks[item.printed:]))
                item.printed = len(item.chunks)
            if not item.done:
                return
            if item.header:
                self._print(_footer(item))
            self._queue.popleft()
        if not final:
            self._spin("thinking ...")

    def _write(self, text: str) -> None:
        self._quiet()
        self.console.print(Text(text, style="dim"), end="", soft_wrap=True, highlight=False)
        self._at_line_start = text.endswith("\n")

    def _print(self, item: RenderableType | Callable[[Console], None]) -> None:
        self._quiet()
        if not self._at_line_start:
            self.console.print()
        if callable(item):
            item(self.console)
        else:
            self.console.print(item)
        self._at_line_start = True

    def _spin(self, text: str) -> None:
        if not self._live:
            return
        if self._status is None:
            self._status = self.console.status(text, spinner="dots")
            self._status.start()
        else:
            self._status.update(text)

    def _quiet(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    # ------------------------------------------------------------------ the answer
    def answer(self, traj: Any) -> None:
        render_extras(self.console, traj)
        self.console.print(answer_panel(traj, with_solution=not self.steps))


def _header(node: str) -> Text:
    role = NODE_ROLE.get(node, node)
    style = ROLE_STYLE.get(role, "white")
    text = Text.assemble(("● ", style), (role, f"bold {style}"))
    if node != role:
        text.append(f" ({node})", style="dim")
    return text


def _footer(s: _Stream) -> Text:
    if s.stopped:
        return Text("  └ stopped", style="yellow")
    tokens = s.tokens if s.tokens is not None else len(s.chunks)
    seconds = (s.ended or time.perf_counter()) - s.started
    return Text(f"  └ {tokens} tok · {seconds:.1f}s", style="dim")


def answer_panel(traj: Any, *, with_solution: bool = False) -> Panel:
    """The final answer, standing out: the answer, its confidence, tokens and seconds."""
    stats = []
    if traj.confidence is not None:
        stats.append(f"confidence {traj.confidence:.2f}")
    stats += [f"{traj.total_tokens} tokens", f"{traj.seconds:.1f}s", traj.graph]
    body = Text()
    if with_solution and traj.solution:
        body.append(traj.solution.strip() + "\n\n", style="dim")
    if traj.final_answer is not None:
        body.append(f"Answer: {traj.final_answer}", style="bold green")
        border = "green"
    else:
        body.append("No answer: the reply had no number in it.", style="bold red")
        border = "red"
    body.append("   " + " · ".join(stats), style="dim")
    return Panel(body, border_style=border, expand=False)
