"""`vote` graph: adaptive sampling, early stop, verifier-weighted votes."""

import asyncio

from studyhall.api import build_graph
from studyhall.graphs.runner import arun
from studyhall.graphs.vote import settled
from studyhall.serving.fake import Rule, ScriptedChatModel


def run(model, **options):
    graph = build_graph("vote", model, checkpointer=None, **options)
    return asyncio.run(arun(graph, "What is 2+3?", graph_name="vote", model="fake", gold="5"))


def student(*replies):
    return Rule(pattern="careful math student", replies=list(replies))


def test_settled_rule():
    assert settled(["5", "5", "5"], k=8, first=3)
    assert not settled(["5", "5"], k=8, first=3)
    assert not settled(["5", "6", "5"], k=8, first=3)
    assert settled(["5", "6", "5", "5", "5", "5", "5"], k=8, first=3)  # 6 > 1 + 1 left
    assert settled(["5", "6"], k=2, first=3)


def test_unanimous_first_samples_stop_early_without_verifier():
    model = ScriptedChatModel(rules=[student("Answer: 5")])
    t = run(model, k=8, first=3)
    assert t.metadata["samples"] == ["5", "5", "5"] and t.confidence == 1.0
    assert [s.sample for s in t.steps] == [0, 1, 2] and len(model.calls) == 3
    assert model.calls[0]["options"]["n"] == 3  # one backend call for the batch


def test_disagreement_draws_more_then_verifies():
    model = ScriptedChatModel(rules=[
        Rule(pattern="strict math teacher", replies=["Verdict: correct\nScore: 0.8"]),
        student("Answer: 5", "Answer: 6", "Answer: 5", "Answer: 5", "Answer: 5"),
    ])
    t = run(model, k=5, first=3, step=2)
    assert t.metadata["samples"] == ["5", "6", "5", "5", "5"]
    assert t.final_answer == "5" and t.correct
    assert sum(1 for s in t.steps if s.role == "verifier") == 2  # one per distinct answer


def test_verifier_weights_can_overturn_the_majority():
    model = ScriptedChatModel(rules=[
        Rule(pattern="strict math teacher.*Answer: 6", replies=["Verdict: incorrect\nScore: 0.1"]),
        Rule(pattern="strict math teacher.*Answer: 5", replies=["Verdict: correct\nScore: 0.9"]),
        student("Answer: 6", "Answer: 6", "Answer: 5"),
    ])
    t = run(model, k=3, first=3)
    assert t.final_answer == "5" and t.metadata["votes"] == {"6": 0.2, "5": 0.9}
    plain = run(ScriptedChatModel(rules=[student("Answer: 6", "Answer: 6", "Answer: 5")]), k=3, first=3, verify=False)
    assert plain.final_answer == "6"


def test_non_adaptive_draws_all_k():
    model = ScriptedChatModel(rules=[student("Answer: 5")])
    t = run(model, k=6, adaptive=False)
    assert len(t.metadata["samples"]) == 6 and len(model.calls) == 6
