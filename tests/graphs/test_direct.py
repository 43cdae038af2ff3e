"""The direct graph's control flow with a scripted model and a real SQLite checkpointer."""

import asyncio

import pytest

from studyhall.api import asolve, build_graph
from studyhall.graphs.checkpoint import open_checkpointer
from studyhall.graphs.runner import arun, arun_many
from studyhall.serving.fake import Rule, ScriptedChatModel


def test_answer_is_parsed_and_recorded(settings):
    model = ScriptedChatModel.from_rules(("clips", "48 / 2 = 24\n48 + 24 = 72\nAnswer: 72"))
    traj = asyncio.run(asolve("Natalia sold 48 clips ...", "direct", model, gold="72", settings=settings))
    assert traj.final_answer == "72" and traj.correct is True and traj.error is None
    [step] = traj.steps
    assert step.role == "student" and step.verdict == "ok" and step.attempts == 1
    assert step.prompt[0].role == "system" and "Answer:" in step.prompt[0].content
    assert step.completion_tokens > 0 and traj.total_tokens == step.prompt_tokens + step.completion_tokens


def test_parse_failure_retries_once_with_a_reminder(settings):
    model = ScriptedChatModel(rules=[
        Rule(pattern="Finish with one final line", replies=["So it is 5.\nAnswer: 5"]),
        Rule(pattern="Problem:", replies=["I do not know."]),
    ])
    traj = asyncio.run(asolve("What is 2+3?", "direct", model, gold="5", settings=settings))
    assert traj.final_answer == "5" and traj.correct
    assert traj.steps[0].attempts == 2 and len(model.calls) == 2


def test_second_parse_failure_is_a_verdict_not_a_crash(settings):
    model = ScriptedChatModel(rules=[Rule(pattern="", replies=["no numbers here"])])
    traj = asyncio.run(asolve("What is 2+3?", "direct", model, gold="5", settings=settings))
    assert traj.error is None and traj.final_answer is None and traj.correct is False
    assert traj.steps[0].verdict == "parse_error"


def test_backend_failure_retries_with_backoff_then_succeeds(settings):
    model = ScriptedChatModel(rules=[Rule(pattern="", replies=["Answer: 5"], fail_times=2)])
    traj = asyncio.run(asolve("What is 2+3?", "direct", model, settings=settings))
    assert traj.final_answer == "5" and traj.error is None and len(model.calls) == 3


def test_one_failing_run_does_not_stop_the_batch(settings):
    model = ScriptedChatModel(rules=[
        Rule(pattern="broken", replies=["x"], fail_times=99, error="server down"),
        Rule(pattern="", replies=["Answer: 1"]),
    ])
    graph = build_graph("direct", model, checkpointer=None, settings=settings)
    items = [{"question": f"q{i}" + (" broken" if i == 2 else "")} for i in range(5)]
    trajs = asyncio.run(arun_many(graph, items, graph_name="direct", model="fake", concurrency=3))
    assert [t.error is None for t in trajs] == [True, True, False, True, True]
    assert "server down" in trajs[2].error
    assert [t.final_answer for t in trajs if not t.error] == ["1"] * 4


def test_empty_question_is_rejected(settings):
    from studyhall.errors import InputError

    with pytest.raises(InputError, match="empty"):
        asyncio.run(asolve("   ", "direct", ScriptedChatModel(), settings=settings))


def test_finished_thread_is_returned_not_rerun(tmp_path):
    model = ScriptedChatModel(rules=[Rule(pattern="", replies=["Answer: 1", "Answer: 2"])])
    saver = open_checkpointer(tmp_path / "cp.sqlite")
    graph = build_graph("direct", model, checkpointer=saver)
    a = asyncio.run(arun(graph, "q", graph_name="direct", model="fake", thread_id="t1"))
    b = asyncio.run(arun(graph, "q", graph_name="direct", model="fake", thread_id="t1"))
    assert a.final_answer == b.final_answer == "1" and len(model.calls) == 1
    assert "t1" in saver.thread_ids()
