"""Chat test helpers: a scripted model script on disk, in-process sessions, and a real
pseudo-terminal driver (pexpect) that answers the terminal's cursor-position queries and
reads the screen output with escape sequences removed."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from io import StringIO
from pathlib import Path
from typing import Any

import pexpect
import pytest
from rich.console import Console

from tests.conftest import REPO

NATALIA = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
           "How many clips did Natalia sell altogether in April and May?")
FOLLOW_UP = "And how many did she sell in May?"

# Rules are tried in order on the whole prompt; the student's prompt ends with the problem
# ("...Problem: QUESTION") and holds earlier turns after "Earlier in this conversation", so
# rules for one question are anchored to the end (\Z) to ignore earlier turns.
SCRIPT: dict[str, Any] = {
    "token_delay": 0.03,
    "rules": [
        {"pattern": r"Problem: BACKEND-DOWN[^\n]*\Z", "replies": ["never"], "fail_times": 1000,
         "error": "the model server is down"},
        {"pattern": r"Problem: BEGIN-PASTE.*END-PASTE How many\?\Z",
         "replies": ["The pasted problem came through whole.\nAnswer: 20000"]},
        {"pattern": r"Problem: LONG-STORY[^\n]*\Z", "replies": [" ".join(["word"] * 300) + "\nAnswer: 1"]},
        {"pattern": "preparing hints", "replies": ["- 48 clips in April\n- half as many in May: 48 / 2"]},
        {"pattern": r"Earlier in this conversation.*48 of her friends.*Problem: And how many did she sell in May",
         "replies": ["In May she sold 48 / 2 = 24 clips.\nAnswer: 24"]},
        {"pattern": "strict math teacher", "replies": ["Verdict: correct\nScore: 0.9"]},
        {"pattern": r"Problem: (?:(?!Problem:).)*2\+3(?:(?!Problem:).)*\Z", "replies": ["2 + 3 = 5\nAnswer: 5"]},
        {"pattern": "Problem: Natalia sold clips", "replies": [
            "In April she sold 48 clips.\nIn May she sold 48 / 2 = 24 clips.\n48 + 24 = 72\nAnswer: 72"]},
    ],
    "default": "I think it is 7.\nAnswer: 7",
}

ANSI = re.compile(r"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[()][A-Za-z0-9]|\x1b[=>78]|\r")


def clean(text: str) -> str:
    return ANSI.sub("", text)


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "script.json"
    path.write_text(json.dumps(SCRIPT))
    return path


def write_script(path: Path, **changes: Any) -> Path:
    path.write_text(json.dumps({**SCRIPT, **changes}))
    return path


def session_for(model: Any, *, graph: str = "direct", thread_id: str = "t1", steps: bool = True):
    """An in-process ChatSession over ``model`` that renders into a string."""
    from studyhall.chat.session import ChatSession
    from studyhall.config import load_settings

    out = Console(file=StringIO(), width=100, color_system=None, highlight=False)
    session = ChatSession(load_settings(), out=out, msg=out, graph=graph, thread_id=thread_id, steps=steps)
    session.model, session.model_spec = model, getattr(model, "spec", "fake")
    session.rebuild()
    return session


def output(session: Any) -> str:
    return session.out.file.getvalue()


class Terminal:
    """``studyhall chat`` in a real pty (120x40, TERM=xterm), driven like a person would."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> None:
        full_env = {**os.environ, "TERM": "xterm", "COLUMNS": "120", "LINES": "40", "PYTHONUNBUFFERED": "1",
                    **(env or {})}
        full_env.pop("NO_COLOR", None)
        self.child = pexpect.spawn(sys.executable, ["-m", "studyhall", "chat", *args], cwd=str(REPO), env=full_env,
                                   dimensions=(40, 120), encoding="utf-8", codec_errors="replace",
                                   timeout=timeout)
        self.raw = ""
        self.text = ""
        self.pos = 0
        self.timeout = timeout

    def _read(self, wait: float) -> bool:
        try:
            data = self.child.read_nonblocking(65536, timeout=wait)
        except pexpect.TIMEOUT:
            return True
        except pexpect.EOF:
            return False
        if "\x1b[6n" in data:  # prompt_toolkit asks where the cursor is: answer like a terminal
            self.child.send("\x1b[20;1R")
        self.raw += data
        self.text = clean(self.raw)
        return True

    def expect(self, pattern: str, timeout: float | None = None) -> re.Match[str]:
        """Wait until ``pattern`` (regex) appears after everything matched so far."""
        deadline = time.time() + (timeout or self.timeout)
        regex = re.compile(pattern, re.S)
        while True:
            found = regex.search(self.text, self.pos)
            if found:
                self.pos = found.end()
                return found
            if time.time() > deadline:
                raise AssertionError(f"{pattern!r} did not appear; screen after the last match:\n"
                                     f"{self.text[self.pos:][-3000:]}")
            if not self._read(0.1) and not regex.search(self.text, self.pos):
                raise AssertionError(f"chat exited before {pattern!r}:\n{self.text[-3000:]}")

    def prompt(self, timeout: float | None = None) -> None:
        """Wait for the prompt and its toolbar: drawn once the input loop reads keys (raw mode)."""
        self.expect(r"\w+>.*?· /help", timeout)

    def answer(self, value: str, timeout: float | None = None) -> re.Match[str]:
        """Wait for the final answer panel (not the same words streaming in a step), then the prompt."""
        found = self.expect(rf"Answer: {re.escape(value)}\s+(?:confidence \S+ · )?\d+ tokens · [\d.]+s", timeout)
        self.prompt(timeout)
        return found

    def line(self, text: str) -> None:
        self.child.send(text + "\r")

    def send(self, data: str | bytes) -> None:
        if isinstance(data, bytes):
            os.write(self.child.child_fd, data)
        else:
            self.child.send(data)

    def send_all(self, text: str, chunk: int = 512) -> None:
        """Write a large input in pieces, reading the echo in between so neither side blocks."""
        data = text.encode("utf-8")
        while data:
            written = os.write(self.child.child_fd, data[:chunk])
            data = data[written:]
            self._read(0.001)

    def drain(self, seconds: float) -> str:
        """Read for ``seconds``; returns the new text."""
        start = len(self.text)
        end = time.time() + seconds
        while time.time() < end and self._read(0.05):
            pass
        return self.text[start:]

    def wait_exit(self, timeout: float = 30) -> int:
        deadline = time.time() + timeout
        while self.child.isalive() and time.time() < deadline:
            self._read(0.1)
        self._read(0.1)
        self.child.close()
        assert self.child.exitstatus is not None, f"chat did not exit:\n{self.text[-2000:]}"
        return self.child.exitstatus

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)
