"""`teach` graph (LLM2LLM): wrong answers -> new problems -> only checked ones kept."""

import asyncio

from studyhall.api import build_graph
from studyhall.graphs.runner import arun
from studyhall.serving.fake import Rule, ScriptedChatModel

BATCH = [
    {"question": "Tom has 3 apples and buys 2 more. How many apples?", "answer": "5"},
    {"question": "A box holds 6 eggs. How many eggs are in 4 boxes?", "answer": "24"},
]
LESSON = """Problem: A crate holds 5 pears. How many pears are in 3 crates?
Solution: 5 * 3 = 15
Answer: 15

Problem: A bag holds 7 nuts. How many nuts are in 2 bags?
Solution: 7 * 2 = 14
Answer: 15

Problem: A box holds 6 eggs. How many eggs are in 4 boxes?
Solution: 6 * 4 = 24
Answer: 24
"""


def run(model, batch=BATCH, **options):
    graph = build_graph("teach", model, checkpointer=None, check="student", **options)
    return asyncio.run(arun(graph, batch[0]["question"], graph_name="teach", model="fake",
                            extra_inputs={"batch": batch}))


def model_for(lesson=LESSON):
    return ScriptedChatModel(rules=[
        Rule(pattern="answered the problem below wrongly", replies=[lesson]),
        Rule(pattern="Problem: Tom has", replies=["3 + 2 = 5\nAnswer: 5"]),
        Rule(pattern="Problem: A box holds 6 eggs", replies=["6 + 4 = 10\nAnswer: 10"]),
        Rule(pattern="Problem: A crate", replies=["Answer: 15"]),
        Rule(pattern="Problem: A bag", replies=["Answer: 14"]),
    ])


def test_only_checked_new_problems_are_kept():
    model = model_for()
    t = run(model)
    assert [a["correct"] for a in t.metadata["attempts"]] == [True, False]
    kept = t.metadata["new_problems"]
    assert [p["question"][:7] for p in kept] == ["A crate"] and kept[0]["answer"] == "15"
    assert kept[0]["source"] == BATCH[1]["question"]
    reasons = sorted(r["reason"].split()[0] for r in t.metadata["rejected"])
    assert reasons == ["duplicate", "re-solved"]  # the copy of the batch problem; the wrong answer
    teacher_step = next(s for s in t.steps if s.role == "teacher")
    assert "Correct answer: 24" in teacher_step.prompt[-1].content and "10" in teacher_step.prompt[-1].content


def test_all_correct_needs_no_teacher():
    model = model_for()
    t = run(model, batch=BATCH[:1])
    assert [s.role for s in t.steps] == ["student"] and "new_problems" not in t.metadata


def test_dedupe_hook_drops_near_duplicates():
    t = run(model_for(), dedupe=lambda questions: [i for i, q in enumerate(questions) if "crate" not in q])
    assert t.metadata["new_problems"] == []
    assert any(r["reason"] == "near-duplicate of memory" for r in t.metadata["rejected"])


def test_without_gold_the_verifier_judges():
    model = ScriptedChatModel(rules=[
        Rule(pattern="strict math teacher", replies=["Verdict: incorrect\nScore: 0.1"]),
        Rule(pattern="answered the problem below wrongly", replies=["Problem: 2 cats and 2 dogs. How many pets?\nSolution: 2 + 2 = 4\nAnswer: 4"]),
        Rule(pattern="Problem: 2 cats", replies=["Answer: 4"]),
        Rule(pattern="", replies=["Answer: 9"]),
    ])
    t = run(model, batch=[{"question": "What is 2+2?", "answer": None}])
    assert t.metadata["attempts"][0]["correct"] is False
    assert len(t.metadata["new_problems"]) == 1
