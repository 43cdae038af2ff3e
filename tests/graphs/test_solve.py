"""LoRID `solve` graph control flow with a scripted model."""

import asyncio

from studyhall.api import build_graph
from studyhall.graphs.runner import arun
from studyhall.serving.fake import Rule, ScriptedChatModel

KNOWLEDGE = Rule(pattern="preparing hints", replies=["- 48 clips in April\n- May is half of April\n- add both months"])
Q = "Natalia sold 48 clips in April and half as many in May. How many in all?"


def run(model, **options):
    graph = build_graph("solve", model, checkpointer=None, **options)
    return asyncio.run(arun(graph, Q, graph_name="solve", model="fake", gold="72"))


def deep(*replies):
    return Rule(pattern="Useful facts and sub-goals", replies=list(replies))


def intuitive(*replies):
    return Rule(pattern="careful math student", replies=list(replies))


def test_agreement_ends_without_the_verifier():
    model = ScriptedChatModel(rules=[KNOWLEDGE, deep("48 + 24 = 72\nAnswer: 72"), intuitive("Answer: 72")])
    t = run(model)
    assert t.final_answer == "72" and t.correct and t.confidence == 1.0
    assert t.metadata["final_role"] == "agreement"
    assert sorted(s.node for s in t.steps) == ["deep_reasoner", "intuitive_reasoner", "knowledge"]
    deep_prompt = next(s for s in t.steps if s.node == "deep_reasoner").prompt[-1].content
    assert "May is half of April" in deep_prompt  # the knowledge reached the deep reasoner


def test_disagreement_verifier_picks_the_correct_one():
    model = ScriptedChatModel(rules=[
        KNOWLEDGE,
        Rule(pattern="strict math teacher.*Answer: 72", replies=["Verdict: correct\nScore: 0.9\nFirst wrong step: none"]),
        Rule(pattern="strict math teacher.*Answer: 70", replies=["Verdict: incorrect\nScore: 0.2\nFirst wrong step: 2"]),
        deep("Half of 48 is 24. 48 + 24 = 72\nAnswer: 72"), intuitive("Answer: 70"),
    ])
    t = run(model)
    assert t.final_answer == "72" and t.metadata["final_role"] == "verifier:deep" and t.confidence == 0.9
    assert {s.node for s in t.steps} >= {"verifier:deep", "verifier:intuitive"}


def test_both_rejected_then_both_retry_and_agree():
    model = ScriptedChatModel(rules=[
        KNOWLEDGE,
        Rule(pattern="strict math teacher", replies=["Verdict: incorrect\nScore: 0.3\nReason: check May"]),
        Rule(pattern="reviewer's note.*Useful facts|Useful facts.*reviewer's note", replies=["Answer: 72"]),
        Rule(pattern="reviewer's note", replies=["Answer: 72"]),
        deep("Answer: 60"), intuitive("Answer: 70"),
    ])
    t = run(model, rounds=3)
    assert t.final_answer == "72" and t.metadata["final_role"] == "agreement"
    assert t.metadata["round"] == 1 and t.confidence == 0.9
    retried = [s for s in t.steps if s.round == 1 and s.node.endswith("reasoner")]
    assert len(retried) == 2
    assert all("check May" in s.prompt[-1].content for s in retried)  # the verifier's reason is fed back


def test_round_limit_takes_the_best_scored_answer():
    model = ScriptedChatModel(rules=[
        KNOWLEDGE,
        Rule(pattern="strict math teacher.*Answer: 60", replies=["Verdict: incorrect\nScore: 0.4"]),
        Rule(pattern="strict math teacher", replies=["Verdict: incorrect\nScore: 0.1"]),
        deep("Answer: 60"), intuitive("Answer: 70"),
    ])
    t = run(model, rounds=2)
    assert t.final_answer == "60" and t.metadata["final_role"] == "verifier:deep"
    assert t.confidence == 0.2 and t.correct is False
    assert max(s.round for s in t.steps) == 1


def test_unparseable_knowledge_is_recorded_and_the_run_goes_on():
    model = ScriptedChatModel(rules=[
        Rule(pattern="preparing hints", replies=["   "]), deep("Answer: 72"), intuitive("Answer: 72"),
    ])
    t = run(model)
    know = next(s for s in t.steps if s.node == "knowledge")
    assert know.verdict == "parse_error" and know.attempts == 2
    assert t.final_answer == "72" and t.error is None
