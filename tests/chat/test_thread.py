"""The chat thread graph, in process: follow-ups see earlier turns, threads survive a new
session on the same SQLite file, a stopped turn leaves nothing half-done behind."""

import asyncio

from studyhall.agents.student import user_prompt
from studyhall.chat.render import TurnView
from studyhall.memory.trajectory_store import TrajectoryStore
from studyhall.serving.fake import ScriptedChatModel

from .conftest import FOLLOW_UP, NATALIA, SCRIPT, session_for


def fake(**kw):
    return ScriptedChatModel(**{**SCRIPT, **kw})


def ask(session, question):
    return asyncio.run(session.ask(question, TurnView(session.out)))


def test_user_prompt_is_unchanged_without_history():
    assert user_prompt("What is 2+3?") == "Problem: What is 2+3?"
    with_history = user_prompt("And in May?", history=[{"question": "April: 48 clips", "answer": "48"}])
    assert with_history.endswith("Problem: And in May?")
    assert "Earlier in this conversation" in with_history and "April: 48 clips\nAnswer: 48" in with_history


def test_a_follow_up_sees_the_earlier_question_also_in_a_new_session():
    model = fake()
    first = session_for(model, thread_id="natalia")
    assert ask(first, NATALIA).final_answer == "72"
    assert "Earlier in this conversation" not in model.calls[-1]["prompt"]
    first.close()

    model = fake()
    second = session_for(model, thread_id="natalia")  # same home, same thread id: a resumed thread
    assert [t.answer for t in asyncio.run(second.turns())] == ["72"]
    traj = ask(second, FOLLOW_UP)
    assert traj.final_answer == "24"
    prompt = model.calls[-1]["prompt"]
    assert "Earlier in this conversation" in prompt and "48 of her friends" in prompt and "Answer: 72" in prompt
    assert [t.question for t in asyncio.run(second.turns())] == [NATALIA, FOLLOW_UP]
    second.close()


def test_history_holds_the_last_three_turns_and_other_threads_stay_apart():
    model = fake()
    session = session_for(model, thread_id="long")
    for i in range(5):
        ask(session, f"Question number {i}: what is {i} + 1?")
    prompt = model.calls[-1]["prompt"]
    assert "Question number 1" in prompt and "Question number 3" in prompt and "Question number 0" not in prompt
    session.thread_id = "other"
    ask(session, "What is 2+3?")
    assert "Earlier in this conversation" not in model.calls[-1]["prompt"]
    assert len(asyncio.run(session.turns("long"))) == 5 and len(asyncio.run(session.turns("other"))) == 1


def test_a_stopped_turn_leaves_no_turn_and_the_next_question_runs():
    model = fake(token_delay=0.05)
    session = session_for(model, thread_id="stop")
    ask(session, NATALIA)

    async def stop_mid_answer():
        task = asyncio.create_task(session.ask("LONG-STORY please", TurnView(session.out)))
        while "word word" not in session.out.file.getvalue():
            await asyncio.sleep(0.02)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return True
        return False

    assert asyncio.run(stop_mid_answer())
    assert "stopped" in session.out.file.getvalue()
    assert [t.question for t in asyncio.run(session.turns())] == [NATALIA]
    traj = ask(session, FOLLOW_UP)  # the follow-up still refers to the question before the stopped one
    assert traj.error is None and traj.final_answer == "24"
    state = asyncio.run(session.chat.aget_state({"configurable": {"thread_id": "stop"}}))
    assert state.next == () and len(state.values["turns"]) == 2


def test_each_turn_is_a_stored_trajectory_with_its_context(settings):
    session = session_for(fake(), thread_id="stored", graph="solve")
    ask(session, NATALIA)
    traj = ask(session, FOLLOW_UP)
    session.close()
    with TrajectoryStore(settings.trajectory_db) as store:
        kept = list(store.query(source="chat"))
    assert [t.question for t in kept] == [NATALIA, FOLLOW_UP]
    assert all(t.thread_id == "stored" and t.graph == "solve" for t in kept)
    assert kept[1].id == traj.id and kept[1].metadata["history"] == [{"question": NATALIA, "answer": "72"}]
    assert {s.role for s in kept[0].steps} >= {"knowledge", "student"}


def test_switching_graph_keeps_the_thread():
    session = session_for(fake(), thread_id="switch")
    ask(session, NATALIA)
    asyncio.run(session.command("/graph solve"))
    traj = ask(session, NATALIA)
    assert traj.graph == "solve" and traj.confidence is not None
    assert [t.graph for t in asyncio.run(session.turns())] == ["direct", "solve"]
