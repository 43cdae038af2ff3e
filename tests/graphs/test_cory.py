"""`cory` graph: pioneer then observer; role swap by config."""

import asyncio

from studyhall.api import build_graph
from studyhall.graphs.runner import arun
from studyhall.serving.fake import Rule, ScriptedChatModel


def run(model, **options):
    graph = build_graph("cory", model, checkpointer=None, **options)
    return asyncio.run(arun(graph, "Natalia ... how many clips?", graph_name="cory", model="fake", gold="72"))


def rules(pioneer_reply="48 + 22 = 70\nAnswer: 70", observer_reply="Half of 48 is 24, so 48 + 24 = 72.\nAnswer: 72"):
    return [Rule(pattern="working with a partner", replies=[observer_reply]),
            Rule(pattern="careful math student", replies=[pioneer_reply])]


def test_observer_reads_the_pioneer_and_corrects_it():
    model = ScriptedChatModel(rules=rules())
    t = run(model)
    assert [s.role for s in t.steps] == ["pioneer", "observer"]
    assert "48 + 22 = 70" in t.steps[1].prompt[-1].content  # the observer saw the pioneer's answer
    assert t.metadata["pioneer"]["answer"] == "70" and t.metadata["observer"]["agrees"] is False
    assert t.final_answer == "72" and t.correct and t.confidence == 0.5


def test_agreement_gives_full_confidence():
    t = run(ScriptedChatModel(rules=rules(pioneer_reply="Answer: 72")))
    assert t.metadata["observer"]["agrees"] is True and t.confidence == 1.0


def test_roles_swap_by_config():
    model = ScriptedChatModel(rules=rules())
    run(model, pioneer_adapter="A", observer_adapter="B")
    assert [c["options"].get("adapter") for c in model.calls] == ["A", "B"]
    swapped = ScriptedChatModel(rules=rules())
    t = run(swapped, pioneer_adapter="A", observer_adapter="B", swap_roles=True)
    assert [c["options"].get("adapter") for c in swapped.calls] == ["B", "A"]
    assert t.metadata["pioneer"]["adapter"] == "B"


def test_unusable_observer_falls_back_to_the_pioneer():
    t = run(ScriptedChatModel(rules=rules(observer_reply="hmm")))
    assert t.final_answer == "70" and t.metadata["final_role"] == "pioneer"
    assert t.steps[1].verdict == "parse_error"
