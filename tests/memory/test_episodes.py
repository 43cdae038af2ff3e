import json
from datetime import UTC, datetime

import pytest

from studyhall.errors import InputError
from studyhall.memory.episodes import Episode, read_episodes, validate_episode, write_episodes
from studyhall.records import AgentStep, Trajectory


def _traj(**kw) -> Trajectory:
    base = dict(question="What is 2+3?", graph="direct", model="fake", final_answer="5", solution="2 + 3 = 5",
                gold_answer="5", correct=True, reward=1.0,
                steps=[AgentStep(role="student", node="student", completion="2 + 3 = 5\nAnswer: 5")])
    return Trajectory(**(base | kw))


def test_from_trajectory_keeps_the_run_and_the_solving_agent():
    traj = _traj(adapter="lora-3")
    ep = Episode.from_trajectory(traj)
    assert (ep.question, ep.solution, ep.answer, ep.correct, ep.reward) == ("What is 2+3?", "2 + 3 = 5", "5", True, 1.0)
    assert (ep.graph, ep.agent, ep.model, ep.adapter, ep.trajectory_id) == ("direct", "student", "fake", "lora-3", traj.id)
    assert ep.created_at == traj.created_at and ep.version == 1


def test_the_solving_agent_is_the_last_ok_solver_step_or_what_the_graph_recorded():
    steps = [AgentStep(role="student", node="student"), AgentStep(role="optimizer", node="optimize"),
             AgentStep(role="verifier", node="verify"), AgentStep(role="optimizer", node="optimize", verdict="parse_error")]
    assert Episode.from_trajectory(_traj(steps=steps)).agent == "optimizer"
    assert Episode.from_trajectory(_traj(steps=steps, metadata={"agent": "observer"})).agent == "observer"
    assert Episode.from_trajectory(_traj(steps=steps), agent="pioneer").agent == "pioneer"


def test_ids_are_deterministic_so_a_rewrite_is_an_update():
    traj = _traj()
    assert Episode.from_trajectory(traj).id == Episode.from_trajectory(traj.model_copy()).id
    assert Episode.from_trajectory(traj).id != Episode.from_trajectory(traj, agent="optimizer").id
    assert Episode.from_trajectory(traj).id != Episode.from_trajectory(_traj()).id  # another run
    a = Episode(question="What  is 2+3?", solution="5", graph="g", agent="a", model="m")
    b = Episode(question="what is 2+3? ", solution="5", graph="g", agent="a", model="m", correct=True)
    assert a.id == b.id and len(a.id) == 32
    assert Episode(question="q", solution="s", graph="g", agent="a", model="m", id="mine").id == "mine"


def test_a_run_without_a_solution_is_not_an_episode():
    with pytest.raises(InputError, match="no solution"):
        Episode.from_trajectory(_traj(solution="  "))


@pytest.mark.parametrize("record, problem", [
    ({"solution": "s", "graph": "g", "agent": "a", "model": "m"}, "question: missing"),
    ({"question": "  ", "solution": "s", "graph": "g", "agent": "a", "model": "m"}, "question = '  ': Value error, must not be empty"),
    ({"question": "q", "solution": "", "graph": "g", "agent": "a", "model": "m"}, "solution = '': Value error, must not be empty"),
    ({"question": "q", "solution": "s", "graph": "g", "agent": "a", "model": "m", "correct": "yes"}, "correct = 'yes': Input should be a valid boolean"),
    ({"question": 7, "solution": "s", "graph": "g", "agent": "a", "model": "m"}, "question = 7: Input should be a valid string"),
    ({"question": "q", "solution": "s", "graph": "g", "agent": "a", "model": "m", "reward": "high"}, "reward = 'high'"),
    ({"question": "q", "solution": "s", "graph": "g", "agent": "a", "model": "m", "colour": "red"}, "colour: unknown field"),
    ({"question": "q", "solution": "s", "graph": "g", "agent": "a", "model": "m", "version": 99}, "episode version 99 is not known"),
])
def test_bad_records_are_rejected_with_the_field_and_the_reason(record, problem):
    with pytest.raises(InputError) as err:
        validate_episode(record)
    assert problem in str(err.value) and "rejected" in str(err.value)


def test_jsonl_roundtrip_and_bad_lines_name_themselves(tmp_path):
    eps = [Episode(question=f"q{i}", solution=f"s{i}", graph="g", agent="a", model="m", reward=float(i),
                   created_at=datetime(2024, 1, i + 1, tzinfo=UTC)) for i in range(3)]
    path = tmp_path / "e.jsonl"
    assert write_episodes(path, eps) == 3
    assert list(read_episodes(path)) == eps
    with open(path, "a") as f:
        f.write("\n" + json.dumps({"question": "q", "solution": "s"}) + "\n")
    with pytest.raises(InputError, match=r"e.jsonl line 5 rejected: graph: missing; agent: missing; model: missing"):
        list(read_episodes(path))
    path.write_text("{not json\n")
    with pytest.raises(InputError, match=r"e.jsonl line 1 rejected: not a JSON object"):
        list(read_episodes(path))
    path.write_text("[1, 2]\n")
    with pytest.raises(InputError, match=r"e.jsonl line 1 rejected: not a JSON object"):
        list(read_episodes(path))
