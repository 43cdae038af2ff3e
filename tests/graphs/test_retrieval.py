"""Retrieval of similar solved problems from a real episodic memory into the graphs."""

import asyncio

import pytest

from studyhall.api import build_graph
from studyhall.errors import InputError
from studyhall.graphs.runner import arun
from studyhall.memory.store import EpisodicMemory
from studyhall.records import AgentStep, Trajectory
from studyhall.serving.fake import Rule, ScriptedChatModel


@pytest.fixture(scope="module")
def memory(tmp_path_factory):
    mem = EpisodicMemory.open(path=tmp_path_factory.mktemp("memory"))
    solved = [
        ("Tom has 3 apples and buys 4 more. How many apples does he have?", "3 + 4 = 7", "7", True),
        ("A farmer has 12 cows and sells 5. How many cows are left?", "12 - 5 = 7", "7", True),
        ("Tom has 3 pears and buys 9 more. How many pears does he have?", "3 + 9 = 13", "13", False),
    ]
    mem.add_trajectories([
        Trajectory(question=q, graph="direct", model="fake", final_answer=a, solution=s, correct=c, gold_answer="x",
                   steps=[AgentStep(role="student", node="student", completion=f"{s}\nAnswer: {a}")])
        for q, s, a, c in solved
    ])
    return mem


@pytest.mark.parametrize("graph_name", ["direct", "vote", "solve"])
def test_retrieved_correct_examples_reach_the_student(memory, graph_name):
    model = ScriptedChatModel(rules=[Rule(pattern="", replies=["- facts\nAnswer: 9"])])
    graph = build_graph(graph_name, model, checkpointer=None, memory=memory, retrieve=1, k=2, first=2)
    t = asyncio.run(arun(graph, "Tom has 5 apples and buys 4 more. How many apples?", graph_name=graph_name, model="fake"))
    assert t.error is None
    student_prompt = next(s for s in t.steps if s.role == "student").prompt[-1].content
    assert "Example 1:" in student_prompt and "Tom has 3 apples" in student_prompt
    assert "pears" not in student_prompt  # wrongly solved episodes are never examples


def test_retrieve_without_memory_is_a_clear_error():
    from studyhall.graphs.registry import build_graph as build_without_defaults

    with pytest.raises(InputError, match="retrieve needs an episodic memory"):
        build_without_defaults("direct", ScriptedChatModel(), checkpointer=None, retrieve=2)
