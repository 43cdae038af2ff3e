"""Piped use, as scripts run it: ``echo "question" | studyhall chat --plain``."""

import subprocess

from studyhall.memory.trajectory_store import TrajectoryStore
from tests.conftest import studyhall_cmd

from .conftest import FOLLOW_UP, NATALIA


def chat(script, *args, stdin: bytes) -> subprocess.CompletedProcess:
    return subprocess.run(studyhall_cmd("chat", "--model", f"fake:{script}", *args), input=stdin,
                          capture_output=True, timeout=300)


def test_plain_prints_just_the_answer_lines(script):
    long_line = ("Tom has 3 apples. " * 1200)[:19_990] + " What is 2+3?"
    stdin = f"What is 2+3?\n\n   \n{NATALIA}\n{long_line}\n".encode()
    out = chat(script, "--plain", stdin=stdin)
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode() == "Answer: 5\nAnswer: 72\nAnswer: 5\n"
    assert b"error" not in out.stderr


def test_invalid_utf8_is_replaced_with_a_warning(script, settings):
    out = chat(script, "--plain", stdin=b"What is 2+3? \xff\xfe caf\xc3\n")
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode() == "Answer: 5\n"
    err = out.stderr.decode()
    assert "stdin line 1 is not valid UTF-8 (byte 0xff at column 14)" in err and "replaced" in err
    with TrajectoryStore(settings.trajectory_db) as store:
        assert [t.question for t in store.query(source="chat")] == ["What is 2+3? \ufffd\ufffd caf\ufffd"]


def test_commands_and_errors_go_to_stderr_and_a_failure_sets_the_exit_code(script):
    stdin = (f"/graph solve\n{NATALIA}\n/frobnicate\nBACKEND-DOWN: what now?\n"
             "What is \\\n2+3?\n/quit\nWhat is 2+3?\n").encode()
    out = chat(script, "--plain", stdin=stdin)
    assert out.stdout.decode() == "Answer: 72\nAnswer: 5\n"  # nothing after /quit
    err = out.stderr.decode()
    assert "graph: solve" in err and "unknown command /frobnicate" in err
    assert "error: the model server is down" in err
    assert out.returncode == 1


def test_a_thread_resumes_across_runs(script):
    first = chat(script, "--plain", "--thread", "piped", stdin=f"{NATALIA}\n".encode())
    assert first.stdout.decode() == "Answer: 72\n"
    second = chat(script, "--plain", "--thread", "piped", stdin=f"{FOLLOW_UP}\n".encode())
    assert second.returncode == 0 and second.stdout.decode() == "Answer: 24\n"
    assert "thread piped resumed · 1 earlier question(s)" in second.stderr.decode()


def test_piped_without_plain_shows_steps_and_the_answer_without_colour(script):
    out = chat(script, stdin=b"What is 2+3?\n")
    text = out.stdout.decode()
    assert out.returncode == 0 and "\x1b[" not in text
    assert "● student\n2 + 3 = 5\nAnswer: 5\n  └ 7 tok" in text
    assert "│ Answer: 5   " in text and " tokens · " in text


def test_bad_options_are_clear_errors(script):
    for args, message in ((["--graph", "nope"], "unknown graph 'nope'"),
                          (["--model", "gpt4"], "openai:BASE_URL#MODEL"),
                          (["--thread", "  "], "the thread id is empty"),
                          (["-o", "k"], "bad option 'k'")):
        out = subprocess.run(studyhall_cmd("chat", "--plain", *(args if "--model" in args else
                                                                   ["--model", f"fake:{script}", *args])),
                             input=b"What is 2+3?\n", capture_output=True, timeout=120)
        assert out.returncode == 2 and message in out.stderr.decode(), (args, out.stderr.decode())
        assert b"Traceback" not in out.stderr and out.stdout == b""
