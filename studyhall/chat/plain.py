"""Piped use: questions arrive on stdin, one per line (a trailing backslash continues a
question on the next line); slash commands work as in the terminal.

``--plain`` prints only the final answer lines (``Answer: N``) on stdout, for scripts;
everything else (warnings, command output, errors) goes to stderr. Without ``--plain`` a
piped session prints the same steps and answers as the terminal, without colours.
Stdin is read as bytes: invalid UTF-8 is replaced with U+FFFD and a warning names the line.
"""

from __future__ import annotations

import asyncio
from typing import Any, BinaryIO

from studyhall.chat.session import ChatSession


class PlainView:
    """Shows nothing while the graph runs; prints ``Answer: N`` when it is done."""

    def __init__(self, write: Any) -> None:
        self.write = write

    def start(self) -> None:
        pass

    def event(self, ns: tuple[str, ...], mode: str, chunk: Any) -> None:
        pass

    def close(self, *, stopped: bool = False) -> None:
        pass

    def answer(self, traj: Any) -> None:
        self.write(f"Answer: {traj.final_answer if traj.final_answer is not None else '(none)'}")


def decode_line(raw: bytes, lineno: int, session: ChatSession) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        session.info(f"[yellow]warning:[/] stdin line {lineno} is not valid UTF-8 "
                     f"(byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); invalid bytes were replaced with \ufffd")
        return raw.decode("utf-8", errors="replace")


async def run_piped(session: ChatSession, stream: BinaryIO) -> int:
    """Answer every question on ``stream``; exit code 1 when any of them failed."""
    lineno, pending = 0, ""
    while True:
        raw = await asyncio.to_thread(stream.readline)
        if not raw:
            break
        lineno += 1
        line = decode_line(raw, lineno, session).rstrip("\r\n")
        if line.endswith("\\"):
            pending += line[:-1] + "\n"
            continue
        text, pending = pending + line, ""
        if not await session.handle(text):
            return 1 if session.failures else 0
    if pending.strip():
        await session.handle(pending)
    return 1 if session.failures else 0
