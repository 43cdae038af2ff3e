"""`optimize` graph (PE2/EduPlanner): evaluate, get feedback, rewrite, keep the best."""

import asyncio

from studyhall.api import build_graph
from studyhall.graphs.runner import arun
from studyhall.serving.fake import Rule, ScriptedChatModel

DEV = [{"question": "What is 2+3?", "answer": "5"}, {"question": "What is 4+4?", "answer": "8"}]
BETTER = "Instruction: Add the numbers carefully, one step at a time. End with a final line of the form: Answer: <number>"


def model_for():
    return ScriptedChatModel(rules=[
        Rule(pattern="You improve instructions", replies=[BETTER, "Instruction: short"]),
        Rule(pattern="You review how a math student", replies=["Feedback: the student guessed instead of adding."]),
        Rule(pattern="Add the numbers carefully.*2\\+3", replies=["2 + 3 = 5\nAnswer: 5"]),
        Rule(pattern="Add the numbers carefully.*4\\+4", replies=["4 + 4 = 8\nAnswer: 8"]),
        Rule(pattern="Add the numbers carefully.*17", replies=["Answer: 20"]),
        Rule(pattern="careful math student", replies=["Answer: 1"]),
    ])


def test_the_best_prompt_wins_and_answers_the_question():
    model = model_for()
    graph = build_graph("optimize", model, checkpointer=None, dev=DEV, budget=3, proposals=2)
    t = asyncio.run(arun(graph, "What is 17+3?", graph_name="optimize", model="fake", gold="20"))
    m = t.metadata
    assert m["best_score"] == 1.0 and m["best_prompt"].startswith("Add the numbers carefully")
    assert [h["score"] for h in m["history"]] == [0.0, 1.0]
    assert m["evaluations"] <= 3
    assert t.final_answer == "20" and t.correct
    feedback = [s for s in t.steps if s.role == "evaluator" and s.node == "evaluator"]
    assert len(feedback) == 2  # one note per failure of the initial prompt
    optimizer_prompt = next(s for s in t.steps if s.role == "optimizer").prompt[-1].content
    assert "guessed instead of adding" in optimizer_prompt and "0/2 correct" in optimizer_prompt


def test_budget_of_one_keeps_the_initial_prompt():
    graph = build_graph("optimize", model_for(), checkpointer=None, dev=DEV, budget=1)
    t = asyncio.run(arun(graph, "What is 17+3?", graph_name="optimize", model="fake"))
    assert t.metadata["history"] == [{"iteration": 0, "prompt": t.metadata["best_prompt"], "score": 0.0}]
