"""``studyhall chat`` on the real packaged SmolLM2 model: tokens stream in a terminal, Ctrl-C
stops the generation inside the batching engine, piped mode prints an answer line."""

import asyncio
import re
import subprocess
import time

import pytest

from studyhall.chat.render import TurnView
from tests.conftest import SMOL, studyhall_cmd

from .conftest import Terminal, session_for

pytestmark = pytest.mark.slow


def test_terminal_session_streams_an_answer_and_ctrl_c_stops_the_next_one():
    term = Terminal("--model", SMOL, "--max-tokens", "64", timeout=240)
    try:
        term.expect(r"thread ")
        term.prompt()
        term.line("What is 2+3?")
        term.expect(r"● student")
        term.expect(r"(Answer: \S+|No answer: .*?)\s+\d+ tokens · [\d.]+s · direct")
        term.prompt()
        term.line("Tell me a very long story about a girl who sells clips to her friends, then count them.")
        term.expect(r"● student\s*\n\S")  # the first words streamed
        term.child.sendintr()
        term.expect(r"└ stopped", timeout=30)
        term.expect(r"stopped — back at the prompt")
        term.prompt()
        term.line("/quit")
        assert term.wait_exit() == 0
    finally:
        term.close()


def test_plain_mode_prints_one_answer_line():
    out = subprocess.run(studyhall_cmd("chat", "--plain", "--model", SMOL, "--max-tokens", "48"),
                         input=b"What is 2+3?\n", capture_output=True, timeout=600)
    assert out.returncode == 0, out.stderr.decode()
    assert re.fullmatch(r"Answer: .+\n", out.stdout.decode())


def test_stopping_an_answer_frees_the_engine(smol):
    session = session_for(smol, thread_id="stop-real")
    session.graph_options = {"max_tokens": 400}
    session.rebuild()
    engine = smol.engine
    view = TurnView(session.out)

    async def stop_after_first_tokens():
        task = asyncio.create_task(session.ask("Write a long story about 40 clips, then count them one by one.", view))
        while not any(s.chunks for s in view._streams.values()):
            await asyncio.sleep(0.02)
            assert not task.done(), "the answer ended before it could be stopped"
        at_cancel = engine.stats["tokens"]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return at_cancel

    at_cancel = asyncio.run(stop_after_first_tokens())
    deadline = time.time() + 30
    while engine._rows and time.time() < deadline:  # the request leaves the batch at the next step
        time.sleep(0.01)
    assert engine._rows == []
    assert engine.stats["tokens"] - at_cancel <= 1  # at most the step that was running; not 400 tokens
    time.sleep(0.5)
    assert engine._rows == [] and engine.stats["tokens"] - at_cancel <= 1
    assert asyncio.run(session.turns()) == []


def test_too_long_a_question_and_an_unsupported_adapter_are_clear_errors(smol, tmp_path):
    session = session_for(smol, thread_id="errors-real")
    session.graph_options = {"max_tokens": 8}
    session.rebuild()
    asyncio.run(session.handle("Tom has 3 apples. " * 3000 + "How many apples?"))  # ~18k tokens
    text = session.out.file.getvalue()
    assert re.search(r"error: prompt has \d+ tokens; the model's context holds \d+", text)
    assert "hint: shorten the question" in text

    empty = tmp_path / "empty"  # not an adapter at all: refused by /adapter itself
    empty.mkdir()
    before = len(session.out.file.getvalue())
    asyncio.run(session.command(f"/adapter {empty}"))
    refused = session.out.file.getvalue()[before:]
    assert "no adapter_config.json" in refused and "Traceback" not in refused and session.adapter is None

    broken = tmp_path / "broken"  # shaped like an adapter, but the backend cannot load it
    broken.mkdir()
    (broken / "adapter_config.json").write_text("{}")
    (broken / "adapter_model.safetensors").write_bytes(b"not weights")
    asyncio.run(session.command(f"/adapter {broken}"))
    before = len(session.out.file.getvalue())
    asyncio.run(session.handle("What is 2+3?"))
    with_adapter = session.out.file.getvalue()[before:]
    assert "error:" in with_adapter and "Traceback" not in with_adapter and "Answer:" not in with_adapter
    asyncio.run(session.command("/adapter off"))
    before = len(session.out.file.getvalue())
    asyncio.run(session.handle("What is 2+3?"))  # the session goes on
    assert re.search(r"(Answer: \S+|No answer: .*?)\s+\d+ tokens", session.out.file.getvalue()[before:])
