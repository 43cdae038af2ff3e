"""Turn rendering on real graph runs (scripted model): agents that generate at the same time
are shown one after the other, unbroken; steps that did not stream print whole."""

import asyncio
import re

from studyhall.chat.render import TurnView
from studyhall.serving.fake import ScriptedChatModel

from .conftest import NATALIA, SCRIPT, output, session_for


def run(session, question, *, steps=True):
    view = TurnView(session.out, steps=steps)
    traj = asyncio.run(session.ask(question, view))
    view.answer(traj)
    return output(session)


def test_parallel_agents_print_one_after_the_other_unbroken():
    # knowledge and the intuitive reasoner stream at the same time in `solve`
    session = session_for(ScriptedChatModel(**{**SCRIPT, "token_delay": 0.02}), graph="solve")
    text = run(session, NATALIA)
    assert "- 48 clips in April\n- half as many in May: 48 / 2\n" in text
    assert "In April she sold 48 clips.\nIn May she sold 48 / 2 = 24 clips.\n48 + 24 = 72\nAnswer: 72" in text
    headers = re.findall(r"● (\w+)(?: \((\w+)\))?", text)
    assert sorted(headers) == sorted([("knowledge", ""), ("student", "intuitive"), ("student", "deep")])
    assert len(re.findall(r"└ \d+ tok · \d+\.\ds", text)) == 3
    assert re.search(r"Answer: 72\s+confidence 1\.00 · \d+ tokens · \d+\.\ds · solve", text)


def test_steps_that_did_not_stream_print_as_panels():
    # vote draws its samples in one call without streaming; the verifier is not needed (all agree)
    session = session_for(ScriptedChatModel(**SCRIPT), graph="vote")
    text = run(session, "What is 2+3?")
    assert text.count("● student (sample)") == 1 and len(re.findall(r"student sample · sample \d", text)) == 2, text
    assert re.search(r"Answer: 5\s+confidence 1\.00", text)


def test_steps_off_shows_the_answer_with_its_reasoning_only():
    session = session_for(ScriptedChatModel(**SCRIPT), graph="direct", steps=False)
    text = run(session, NATALIA, steps=False)
    assert "●" not in text and "└" not in text
    assert "48 + 24 = 72" in text and re.search(r"Answer: 72\s+\d+ tokens", text)


def test_no_answer_is_said_plainly():
    session = session_for(ScriptedChatModel(default="I cannot say."))
    text = run(session, "What is the meaning of it all?")
    assert "No answer: the reply had no number in it." in text
