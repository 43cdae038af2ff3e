import json

import pytest

from studyhall.errors import InputError
from studyhall.memory.trajectory_store import TrajectoryStore, read_trajectories
from studyhall.records import AgentStep, Trajectory


def _traj(i: int, correct: bool | None = True) -> Trajectory:
    return Trajectory(question=f"q{i}", graph="direct", model="fake", final_answer=str(i),
                      gold_answer=str(i), correct=correct,
                      steps=[AgentStep(role="student", node="student", completion=f"Answer: {i}", completion_tokens=3)])


def test_upsert_query_and_roundtrip(tmp_path):
    store = TrajectoryStore(tmp_path / "t.sqlite")
    trajs = [_traj(i, correct=i % 2 == 0) for i in range(6)]
    assert store.put(trajs) == 6
    store.put(trajs[0])  # the same run twice keeps one copy
    assert store.count() == 6 and store.count(correct=True) == 3
    got = store.get(trajs[3].id)
    assert got == trajs[3] and got.completion_tokens == 3
    out = tmp_path / "t.jsonl"
    assert store.export_jsonl(out, correct=False) == 3
    other = TrajectoryStore(tmp_path / "u.sqlite")
    assert other.import_jsonl(out, source="imported") == 3
    assert other.count(source="imported") == 3
    store.close()
    assert TrajectoryStore(tmp_path / "t.sqlite").count() == 6  # restart sees every committed run


def test_bad_rows_name_their_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text(_traj(1).model_dump_json() + "\n" + json.dumps({"question": "no graph"}) + "\n")
    with pytest.raises(InputError, match="line 2"):
        read_trajectories(f)
