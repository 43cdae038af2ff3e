"""``studyhall chat`` in a real pseudo-terminal with the scripted model: streaming, every
slash command, Ctrl-C, Ctrl-D, resuming a thread, empty lines, a 20,000-character paste,
invalid UTF-8 typed in, a backend that fails."""

import json
import re

import pytest

from studyhall.memory.trajectory_store import TrajectoryStore

from .conftest import FOLLOW_UP, NATALIA, Terminal, write_script


@pytest.fixture
def chat(script):
    """Start a session; every terminal is killed at the end of its test."""
    started = []

    def start(*args, model=None):
        term = Terminal("--model", f"fake:{model or script}", *args)
        started.append(term)
        term.expect(r"thread ")
        term.prompt()
        return term

    yield start
    for term in started:
        term.close()


def test_a_question_streams_token_by_token_and_the_answer_stands_out(chat, tmp_path):
    slow = write_script(tmp_path / "slow.json", token_delay=0.1)
    term = chat("--graph", "solve", model=slow)
    toolbar = r"graph solve · model fake:slow\.json · adapter none · thread \w+ · steps on · /help"
    assert re.search(toolbar, term.text)
    term.line(NATALIA)
    term.expect(r"● student \(intuitive\)|● knowledge")
    term.expect(r"In April")
    assert "Answer: 72" not in term.text[term.pos:], "the answer was there before the first words streamed"
    term.expect(r"└ \d+ tok · \d+\.\ds")
    found = term.expect(r"Answer: 72\s+confidence (\S+) · (\d+) tokens · (\d+\.\d)s · solve")
    assert float(found[1]) == 1.0 and int(found[2]) > 0
    term.prompt()


def test_graph_model_and_steps_commands(chat, tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"default": "The other model says 99.\nAnswer: 99"}))
    term = chat()
    term.line("/help")
    term.expect(r"/feedback right\|wrong \[ANSWER\]")
    term.expect(r"Esc then Enter inserts a new line")
    term.line("/graphs")
    term.expect(r"\* direct\s+one student pass")
    term.expect(r"vote\s+self-consistency")
    term.line("/graph solve")
    term.expect(r"graph: solve")
    term.expect(r"solve>")
    term.line("/graph nope")
    term.expect(r"error: unknown graph 'nope'")
    term.expect(r"hint: graphs: direct, solve, vote")
    term.line("/graph")
    term.expect(r"graph: solve")
    term.line("/model")
    term.expect(r"model: fake:\S+script\.json\s+adapter: none")
    term.line(f"/model fake:{other}")
    term.expect(r"model: fake:\S+other\.json")
    term.line("What is 9 * 11?")
    term.expect(r"The other model says 99")
    term.answer("99")
    term.line("/model gpt4")
    term.expect(r"error: .*openai:BASE_URL#MODEL")
    term.line("/model")
    term.expect(r"model: fake:\S+other\.json")  # a bad spec keeps the loaded model
    term.line("/steps off")
    term.expect(r"steps: off")
    term.line("What is 9 * 11?")
    shown = term.expect(r"(.*?)Answer: 99")
    assert "●" not in shown[1] and "The other model says 99" in shown[1]  # no steps, reasoning in the answer
    term.line("/steps on")
    term.expect(r"steps: on")
    term.line("/steps sideways")
    term.expect(r"error: say /steps on or /steps off")
    term.line("/frobnicate")
    term.expect(r"unknown command /frobnicate — commands: /graph /graphs /model /adapter /memory /feedback")
    term.line("/quit")
    term.expect("bye")
    assert term.wait_exit() == 0


def test_adapter_command_binds_it_on_every_model_call(chat, tmp_path, settings):
    adapter = tmp_path / "adapters" / "algebra-v1"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")  # a folder shaped like a peft adapter (the
    (adapter / "adapter_model.safetensors").write_bytes(b"")  # scripted model does not load it)
    term = chat()
    term.line("/adapter")
    term.expect(r"adapter: none")
    term.line(f"/adapter {adapter}")
    term.expect(r"adapter: \S*algebra-v1 \(bound on every model call\)")
    term.expect(r"adapter algebra-v1 · thread")  # the toolbar shows it
    term.line("What is 2+3?")
    term.answer("5")
    term.line("/adapter /no/such/adapter")
    term.expect(r"error: no adapter ./no/such/adapter.: not a folder")
    term.line("/model")
    term.expect(r"adapter:\s+\S*algebra-v1")  # unchanged after the error
    term.line("/adapter off")
    term.expect(r"adapter: none")
    term.line("What is 2+3?")
    term.answer("5")
    term.line("/quit")
    assert term.wait_exit() == 0
    with TrajectoryStore(settings.trajectory_db) as store:
        adapters = [t.adapter for t in store.query(source="chat")]
    assert adapters == [str(adapter.resolve()), None]


def test_thread_commands(chat):
    term = chat("--thread", "first")
    term.line(NATALIA)
    term.answer("72")
    term.line("/thread")
    term.expect(r"thread first · 1 question\(s\)")
    term.line("/thread new second")
    term.expect(r"new thread second")
    term.line(FOLLOW_UP)  # no history in a new thread: the scripted model does not know
    term.answer("7")
    term.line("/thread list")
    term.expect(r"\*\s+second\s+1 question\(s\)\s+And how many")
    term.expect(r"first\s+1 question\(s\)\s+Natalia sold")
    term.line("/thread resume first")
    term.expect(r"thread first resumed · 1 earlier question\(s\)")
    term.expect(r"Natalia sold clips.*→ 72")
    term.line(FOLLOW_UP)
    term.answer("24")
    term.line("/thread resume nowhere")
    term.expect(r"error: no thread 'nowhere'")
    term.line("/thread sideways")
    term.expect(r"error: unknown /thread action 'sideways'")
    term.line("/thread new")
    term.expect(r"new thread \w{8}")


def test_feedback_stores_a_labelled_trajectory(chat, settings):
    term = chat("--thread", "fb")
    term.line("/feedback right")
    term.expect(r"error: no answer to give feedback on yet")
    term.line("How many legs do 3 cats have?")
    term.answer("7")
    term.line("/feedback wrong 12")
    term.expect(r"feedback stored: wrong, correct answer 12")
    term.line("/feedback wrong 7")
    term.expect(r"error: 7 is the answer that was given")
    term.line("/feedback maybe")
    term.expect(r"error: say /feedback right, or /feedback wrong")
    term.line(NATALIA)
    term.answer("72")
    term.line("/feedback right")
    term.expect(r"feedback stored: right")
    with TrajectoryStore(settings.trajectory_db) as store:
        by_question = {t.question: t for t in store.query(source="chat")}
    cats = by_question["How many legs do 3 cats have?"]
    assert cats.correct is False and cats.gold_answer == "12" and cats.reward == 0.0
    assert cats.metadata["feedback"]["label"] == "wrong" and cats.metadata["feedback"]["thread_id"] == "fb"
    assert by_question[NATALIA].correct is True and by_question[NATALIA].gold_answer == "72"
    term.line("/quit")
    assert term.wait_exit() == 0

    again = chat("--thread", "fb")  # after a restart, feedback applies to the thread's last answer
    again.line("/feedback wrong 70")
    again.expect(r"feedback stored: wrong, correct answer 70")
    with TrajectoryStore(settings.trajectory_db) as store:
        natalia = next(t for t in store.query(source="chat") if t.question == NATALIA)
    assert natalia.correct is False and natalia.gold_answer == "70"


def test_memory_finds_similar_solved_problems(chat, settings):
    term = chat()
    term.line("/memory")  # nothing asked yet, nothing given
    term.expect(r"error: nothing to look up")
    term.line(NATALIA)
    term.answer("72")
    term.line("/memory")  # the last question is the query; this test's memory is empty
    term.expect(r"no similar solved problems in memory yet", timeout=180)
    term.prompt()
    term.line("/quit")
    assert term.wait_exit() == 0

    from studyhall.memory.episodes import Episode
    from studyhall.memory.store import EpisodicMemory

    solved = Episode(question="Tom sold 30 pens in June and half as many in July. How many pens in all?",
                     solution="30 + 15 = 45\nAnswer: 45", answer="45", correct=True, graph="direct",
                     agent="student", model="m")
    EpisodicMemory.open(settings).add([solved])
    term = chat()
    term.line("/memory pens sold in June and July")
    term.expect(r"1\. Tom sold 30 pens", timeout=180)
    term.expect(r"Answer: 45")
    term.line("What is 2+3?")
    term.answer("5")


def test_a_resumed_thread_remembers_and_input_history_survives(chat):
    term = chat("--thread", "natalia")
    term.line(NATALIA)
    term.answer("72")
    term.line("/quit")
    assert term.wait_exit() == 0

    again = chat("--thread", "natalia")
    assert re.search(r"thread natalia resumed · 1 earlier question\(s\)\s+Natalia sold clips.*→ 72", again.text, re.S)
    again.send("\x1b[A")  # Up: the last input of the previous session comes back
    again.expect(r"/quit")  # (the terminal redraws only what changed, after the prompt)
    again.send("\x1b[A")  # and the question before it
    again.expect(r"Natalia sold clips to 48")
    again.child.sendintr()  # drop the recalled line
    again.prompt()
    again.line(FOLLOW_UP)
    again.expect(r"In May she sold 48 / 2 = 24 clips")
    again.answer("24")


def test_empty_lines_multi_line_input_invalid_utf8_and_a_20000_character_paste(chat, settings):
    term = chat()
    term.line("")
    term.line("   ")
    term.line("What is 2+3?")
    before = term.expect(r"(.*?)Answer: 5")
    assert "error" not in before[1] and "Answer" not in before[1], before[1]
    term.answer("5")

    term.send("Natalia sold clips to 48 of her friends \\\r")  # trailing backslash: continue
    term.send("in April.\x1b\r")  # Esc then Enter: a new line
    term.line("How many?")
    term.answer("72")

    term.send(b"What is 2+3? \xff\xfe caf\xc3 \r")
    term.expect(r"warning: the input had invalid UTF-8 bytes; they were replaced")
    term.answer("5")

    body = ("Tom has 3 apples and buys 4 more apples at the market.\n" * 400)[:19_968]
    question = f"BEGIN-PASTE {body} END-PASTE How many?"
    assert len(question) == 20_000
    term.send_all("\x1b[200~" + question + "\x1b[201~")  # a bracketed paste, as terminals send it
    term.line("")
    term.expect(r"The pasted problem came through whole", timeout=120)
    term.answer("20000")
    with TrajectoryStore(settings.trajectory_db) as store:
        questions = [t.question for t in store.query(source="chat")]
    assert questions[:2] == ["What is 2+3?", "Natalia sold clips to 48 of her friends \nin April.\nHow many?"]
    assert questions[2] == "What is 2+3? \ufffd\ufffd caf\ufffd" and questions[3] == question


def test_ctrl_c_stops_an_answer_a_backend_error_is_survived_and_ctrl_d_exits(chat):
    term = chat()
    term.child.sendintr()  # at the prompt: the line is dropped, the session stays
    term.line("LONG-STORY: tell me everything")
    term.expect(r"word word word")
    term.child.sendintr()
    term.expect(r"└ stopped")
    term.expect(r"stopped — back at the prompt")
    term.prompt()
    term.line("What is 2+3?")
    term.answer("5")
    assert "Answer: 1" not in term.text

    term.line("BACKEND-DOWN: what is 2+2?")  # fails three times (retried with backoff), then gives up
    term.expect(r"error: the model server is down", timeout=60)
    term.expect(r"hint: the session goes on")
    term.prompt()
    term.line("What is 2+3?")
    term.answer("5")

    term.child.sendeof()
    term.expect("bye")
    assert term.wait_exit() == 0
