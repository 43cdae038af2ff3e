"""`studyhall memory ...`: real subprocesses, except the two commands that embed text (search,
import), which run in this process through typer's runner so the embedding model is loaded
once for the whole test session rather than once per command."""

import json
import subprocess
from datetime import UTC, datetime

from typer.testing import CliRunner

from studyhall.cli import app
from studyhall.memory.store import EpisodicMemory

from ..conftest import free_port, studyhall_cmd
from .test_store import APPLES, ep


def memory(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(studyhall_cmd("memory", *args), capture_output=True, text=True, input=input, timeout=300)


def memory_here(*args: str):
    result = CliRunner().invoke(app, ["memory", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_stats_search_export_import_forget(tmp_path):
    folder = tmp_path / "memory"
    old = ep("An old question about 9 pears and 2 plums?", "9 + 2 = 11", created_at=datetime(2023, 1, 1, tzinfo=UTC))
    EpisodicMemory.open(path=folder).add(APPLES + [old])

    out = memory("--path", str(folder), "stats", "--json")
    assert out.returncode == 0, out.stderr
    st = json.loads(out.stdout)
    assert (st["episodes"], st["correct"], st["wrong"], st["unknown"]) == (6, 4, 1, 1)

    out = memory_here("--path", str(folder), "search", "Mia has 2 apples and buys 9 more. How many apples?",
                      "-k", "2", "--solved", "--json")
    assert out.exit_code == 0, out.output
    hits = [json.loads(line) for line in out.stdout.splitlines()]
    assert [h["question"] for h in hits] == [APPLES[0].question, APPLES[2].question]
    assert 0 < hits[1]["similarity"] < hits[0]["similarity"] <= 1

    dump = tmp_path / "dump.jsonl"
    out = memory("--path", str(folder), "export", str(dump))
    assert out.returncode == 0 and "exported 6 episodes" in out.stdout
    out = memory_here("--path", str(tmp_path / "copy"), "import", str(dump))
    assert out.exit_code == 0 and "imported 6 episodes" in out.stdout and "holds 6" in out.stdout, out.output
    out = memory_here("--path", str(tmp_path / "copy"), "search", "pears and plums")
    assert out.exit_code == 0 and "An old question about 9 pears" in out.stdout

    out = memory("--path", str(folder), "forget", "--before", "2024-01-01", "--yes")
    assert out.returncode == 0 and "forgot 1 episodes" in out.stdout
    out = memory("--path", str(folder), "stats")
    assert out.returncode == 0 and "episodes 5" in out.stdout and "student 6" not in out.stdout


def test_mistakes_are_one_clear_line_not_a_traceback(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "solution": "s", "graph": "g", "agent": "a"}\n')
    runs = [
        (memory("--path", str(tmp_path / "m"), "import", str(bad)), 2, "line 1 rejected: model: missing"),
        (memory("--path", str(tmp_path / "m"), "forget", "--before", "last tuesday", "--yes"), 2, "is not a date"),
        (memory("--url", f"http://127.0.0.1:{free_port()}", "stats"), 2, "cannot reach the chroma server"),
        (memory("--path", str(tmp_path / "m"), "search", "  "), 2, "text is empty"),
        (memory("--path", str(tmp_path / "m"), "forget", "--before", "2024-01-01", input="n\n"), 1, "Aborted"),
    ]
    for out, code, message in runs:
        assert out.returncode == code and message in out.stderr, out.stderr
        assert "Traceback" not in out.stderr


def test_remember_adds_trajectories_as_episodes_and_refuses_a_bad_file_whole(tmp_path):
    from studyhall.records import AgentStep, Trajectory

    def traj(q: str, answer: str, correct: bool) -> Trajectory:
        step = AgentStep(role="student", node="student", completion=f"... Answer: {answer}")
        return Trajectory(question=q, graph="direct", model="m", steps=[step], final_answer=answer,
                          solution=f"work\nAnswer: {answer}", gold_answer="5", correct=correct)

    runs = tmp_path / "trajectories.jsonl"
    runs.write_text("".join(t.model_dump_json() + "\n" for t in [
        traj("Tom has 2 pens and buys 3. How many pens?", "5", True),
        traj("Ann has 9 cups and breaks 4. How many cups?", "6", False),
    ]))
    folder = tmp_path / "memory"
    out = memory_here("--path", str(folder), "remember", str(runs))
    assert out.exit_code == 0 and "remembered 2 episodes (1 correct)" in out.stdout, out.output
    solved = EpisodicMemory.open(path=folder).similar_solved("Tom has 4 pens and buys 1. How many?", k=2)
    assert [s["question"] for s in solved] == ["Tom has 2 pens and buys 3. How many pens?"]

    bad = tmp_path / "bad.jsonl"
    bad.write_text(runs.read_text().splitlines()[0] + "\n{\"question\": 3}\n")
    out = memory("--path", str(tmp_path / "other"), "remember", str(bad))
    assert out.returncode == 2 and "line 2 is not a trajectory" in out.stderr and "Traceback" not in out.stderr
