"""Every graph end to end on the real packaged SmolLM2 model with a few GSM8K problems.

SmolLM2-135M is weak, so these check that each graph runs for real — every agent called,
steps recorded with token counts, no errors — not that it gets the answers right. A decode step
costs ~0.1 s here whatever the model, so budgets are small: few tokens, one problem where a
graph makes many sequential calls.
"""

import asyncio

import pytest

from studyhall.api import build_graph
from studyhall.evals.datasets import load_gsm8k
from studyhall.graphs.runner import arun, arun_many

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def problems():
    return load_gsm8k(None, "test").problems[:2]


def run_all(graph_name, model, problems, max_tokens=48, **options):
    graph = build_graph(graph_name, model, checkpointer=None, max_tokens=max_tokens, **options)
    items = [{"question": p.question, "gold": p.answer} for p in problems]
    trajs = asyncio.run(arun_many(graph, items, graph_name=graph_name, model=model.spec, concurrency=4))
    for t in trajs:
        assert t.error is None, t.error
        assert t.steps and all(s.completion_tokens > 0 for s in t.steps if s.role != "tool")
        assert t.gold_answer is not None and t.correct is not None
    return trajs


@pytest.mark.parametrize(("graph", "roles", "options", "count"), [
    ("direct", {"student"}, {}, 2),  # two problems batched together
    ("solve", {"knowledge", "student"}, {"rounds": 1}, 1),  # the retry rounds: tests/graphs with a scripted model
    ("cory", {"pioneer", "observer"}, {}, 1),
    ("code", {"coder"}, {"max_turns": 2}, 1),
])
def test_question_graphs(smol, problems, graph, roles, options, count):
    for t in run_all(graph, smol, problems[:count], **options):
        assert roles <= {s.role for s in t.steps}


def test_vote_samples_differ_and_are_recorded(smol, problems):
    [t] = run_all("vote", smol, problems[:1], k=4, first=4)
    roles = {s.role for s in t.steps}
    assert "student" in roles and roles <= {"student", "verifier"}  # the verifier weights the votes
    assert len(t.metadata["samples"]) == 4 and len({s.completion for s in t.steps if s.role == "student"}) > 1


def test_teach_on_a_batch(smol, problems):
    graph = build_graph("teach", smol, checkpointer=None, check="student", max_tokens=96, per_problem=1)
    batch = [{"question": p.question, "answer": p.answer, "solution": p.solution} for p in problems]
    t = asyncio.run(arun(graph, batch[0]["question"], graph_name="teach", model=smol.spec, extra_inputs={"batch": batch}))
    assert t.error is None and len(t.metadata["attempts"]) == 2
    if any(not a["correct"] for a in t.metadata["attempts"]):
        assert any(s.role == "teacher" for s in t.steps)
        kept, rejected = t.metadata.get("new_problems", []), t.metadata.get("rejected", [])
        assert all(p["answer"] is not None for p in kept)
        assert len(kept) + len(rejected) == len(t.metadata.get("candidates", []))


def test_optimize_with_a_tiny_budget(smol, problems):
    dev = [{"question": p.question, "answer": p.answer} for p in problems]
    graph = build_graph("optimize", smol, checkpointer=None, dev=dev[:1], budget=2, proposals=1, max_tokens=48)
    t = asyncio.run(arun(graph, "What is 6 * 7?", graph_name="optimize", model=smol.spec))
    assert t.error is None and t.metadata["best_prompt"] and t.metadata["evaluations"] <= 2
    assert {"student", "optimizer"} <= {s.role for s in t.steps}
