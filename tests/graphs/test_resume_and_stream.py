"""LangGraph used properly: a killed run resumes from its thread id; node and token streaming."""

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

from studyhall.api import build_graph
from studyhall.graphs.checkpoint import open_checkpointer
from studyhall.graphs.runner import arun
from studyhall.serving.fake import Rule, ScriptedChatModel

RULES = (  # source text, so the crashing subprocess scripts the same model
    '[Rule(pattern="preparing hints", replies=["- 48 in April"]), '
    'Rule(pattern="Useful facts", replies=["Answer: 72"]), '
    'Rule(pattern="careful math student", replies=["Answer: 70"])]'
)


def test_run_killed_mid_graph_resumes_without_redoing_finished_nodes(tmp_path):
    db = tmp_path / "cp.sqlite"
    script = tmp_path / "crash.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio, sys
        from studyhall.api import build_graph
        from studyhall.graphs.checkpoint import open_checkpointer
        from studyhall.graphs.runner import arun
        from studyhall.serving.fake import Rule, ScriptedChatModel
        rules = {RULES} + [Rule(pattern="strict math teacher", replies=["Verdict: correct"], delay=3600)]
        graph = build_graph("solve", ScriptedChatModel(rules=rules), checkpointer=open_checkpointer(sys.argv[1]))
        asyncio.run(arun(graph, "Natalia sold 48 clips", graph_name="solve", model="fake", thread_id="t-crash"))
    """))
    proc = subprocess.Popen([sys.executable, str(script), str(db)], cwd=os.getcwd())
    probe = build_graph("solve", ScriptedChatModel(), checkpointer=open_checkpointer(db))
    config = {"configurable": {"thread_id": "t-crash"}}
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until the run hangs inside the verifier
        if db.exists() and asyncio.run(probe.aget_state(config)).next == ("verify",):
            break
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.2)
    else:
        raise AssertionError("the run never reached the verifier")
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)

    rules = eval(RULES) + [  # noqa: S307 - the same scripted rules, plus a verifier that answers
        Rule(pattern="strict math teacher.*Answer: 72", replies=["Verdict: correct\nScore: 0.9"]),
        Rule(pattern="strict math teacher", replies=["Verdict: incorrect\nScore: 0.1"]),
    ]
    model = ScriptedChatModel(rules=rules)
    graph = build_graph("solve", model, checkpointer=open_checkpointer(db))
    t = asyncio.run(arun(graph, "Natalia sold 48 clips", graph_name="solve", model="fake", thread_id="t-crash"))
    assert t.final_answer == "72" and t.error is None
    assert all("strict math teacher" in c["prompt"] for c in model.calls)  # only the verifier ran again
    assert sorted(s.node for s in t.steps if s.role != "verifier") == ["deep_reasoner", "intuitive_reasoner", "knowledge"]


def test_fatal_error_is_recorded_and_the_thread_resumes_later(tmp_path):
    saver = open_checkpointer(tmp_path / "cp.sqlite")
    model = ScriptedChatModel(rules=eval(RULES) + [  # noqa: S307
        Rule(pattern="strict math teacher.*Answer: 72", replies=["Verdict: correct\nScore: 0.9"], fail_times=1,
             fatal=True, error="disk on fire"),
        Rule(pattern="strict math teacher", replies=["Verdict: incorrect\nScore: 0.1"]),
    ])
    graph = build_graph("solve", model, checkpointer=saver)
    first = asyncio.run(arun(graph, "q", graph_name="solve", model="fake", thread_id="t1"))
    assert "disk on fire" in first.error and first.final_answer is None
    assert len(first.steps) == 3  # the finished nodes are kept in the trajectory
    calls = len(model.calls)
    second = asyncio.run(arun(graph, "q", graph_name="solve", model="fake", thread_id="t1"))
    assert second.error is None and second.final_answer == "72"
    assert len(model.calls) - calls == 2  # just the two verifier calls


def test_node_updates_and_tokens_stream():
    model = ScriptedChatModel(rules=eval(RULES))  # noqa: S307
    graph = build_graph("direct", model, checkpointer=None)

    async def collect():
        events = []
        async for mode, chunk in graph.astream({"question": "q", "steps": []}, stream_mode=["messages", "updates"]):
            events.append((mode, chunk))
        return events

    events = asyncio.run(collect())
    tokens = [c[0].content for m, c in events if m == "messages" and c[1]["langgraph_node"] == "student"]
    assert len(tokens) >= 2 and "".join(tokens) == "Answer: 70"
    updates = [next(iter(c)) for m, c in events if m == "updates"]
    assert updates == ["student"]
    assert [m for m, _ in events].index("updates") > 0  # tokens arrived before the node finished
