"""`code` graph: the student's Python runs in the real sandbox; errors come back for a fix."""

import asyncio

from studyhall.api import build_graph
from studyhall.graphs.runner import arun
from studyhall.serving.fake import Rule, ScriptedChatModel

GOOD = "```python\napril = 48\nmay = april / 2\nprint(int(april + may))\n```"
BROKEN = "```python\napril = 48\nprint(april + mai)\n```"


def run(model, **options):
    graph = build_graph("code", model, checkpointer=None, **options)
    return asyncio.run(arun(graph, "Natalia sold 48 clips ...", graph_name="code", model="fake", gold="72"))


def test_program_output_is_the_answer():
    model = ScriptedChatModel(rules=[Rule(pattern="", replies=[GOOD])])
    t = run(model)
    assert t.final_answer == "72" and t.correct and len(model.calls) == 1
    [call] = t.steps[1].tool_calls
    assert call.tool == "python" and call.ok and call.output.strip() == "72"


def test_error_comes_back_and_the_fix_runs():
    model = ScriptedChatModel(rules=[Rule(pattern="", replies=[BROKEN, GOOD])])
    t = run(model)
    assert t.final_answer == "72"
    assert [s.role for s in t.steps] == ["coder", "tool", "coder", "tool"]
    assert t.steps[1].tool_calls[0].error_kind == "runtime_error"
    assert "NameError" in model.calls[1]["prompt"]  # the coder saw the error


def test_plain_answer_without_code_stands_on_the_last_turn():
    # a guess before any program ran is sent back once; on the last turn it stands
    model = ScriptedChatModel(rules=[Rule(pattern="", replies=["48 + 24 = 72\nAnswer: 72"])])
    t = run(model, max_turns=2)
    assert t.final_answer == "72" and [s.role for s in t.steps] == ["coder", "coder"]
    assert "write the Python program" in model.calls[1]["prompt"]


def test_answer_without_a_program_asks_for_the_program():
    program = "```python\nprint(48 + 24)\n```"
    model = ScriptedChatModel(rules=[Rule(pattern="Do not answer yet", replies=[program]),
                                     Rule(pattern="", replies=["Answer: 70"])])
    t = run(model)
    assert t.final_answer == "72" and [s.role for s in t.steps] == ["coder", "coder", "tool"]


def test_hostile_code_is_refused_and_turns_run_out():
    evil = "```python\nimport subprocess\nprint(subprocess.run(['cat', '/etc/passwd']).stdout)\n```"
    model = ScriptedChatModel(rules=[Rule(pattern="", replies=[evil])])
    t = run(model, max_turns=2)
    assert t.error is None and t.final_answer is None
    kinds = [s.tool_calls[0].error_kind for s in t.steps if s.role == "tool"]
    assert kinds == ["forbidden", "forbidden"] and len(model.calls) == 2
