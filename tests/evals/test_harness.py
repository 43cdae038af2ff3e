"""The harness in-process with a scripted model: rows, summary, resume, refusal, bad input."""

import json

import pytest

from studyhall.errors import InputError
from studyhall.evals.checkers import Checkers
from studyhall.evals.harness import CHECKPOINTS, ROWS, TRAJECTORIES, RunDir, rescore, run_eval
from studyhall.records import Trajectory
from studyhall.serving.fake import Rule, ScriptedChatModel

from ..conftest import SMOL

QUESTIONS = [
    ("Tom has 3 apples and buys 4 more. How many apples?", "7", "3 + 4 = 7\nAnswer: 7"),
    ("A pie is cut in 4; Ann eats 3 pieces. What fraction is eaten?", "3/4", "She ate 3 of 4.\nAnswer: 3/4"),
    ("It was 2 degrees and fell by 5. What is it now?", "-3", "2 - 5 = -3, so it is -3 degrees."),
    ("Pens cost 2.5 dollars. What do 3 pens cost?", "7.5", "3 * 2.5 = 7.5\n#### 7.50"),
    ("A farm has 1,200 hens and sells 100. How many are left?", "1100", "1200 - 100 = 1100 hens\nAnswer: 1,100"),
    ("Sam reads 6 pages a day for 5 days. How many pages?", "30", "6 * 5 = 30. The answer is $\\boxed{30}$."),
    ("Ben had 10 marbles and lost 4. How many now?", "6", "10 - 4 = 5\nAnswer: 5"),
    ("What is 9 times 9?", "81", "I do not know."),
]


def write_set(path, rows=QUESTIONS, extra=()):
    lines = [json.dumps({"question": q, "answer": a}) for q, a, _ in rows] + list(extra)
    path.write_text("\n".join(lines) + "\n")
    return path


def scripted(rows=QUESTIONS, **kw):
    return ScriptedChatModel(rules=[Rule(pattern=q.split()[0] + " " + q.split()[1], replies=[r])
                                    for q, _, r in rows], spec="fake:test", **kw)


@pytest.fixture(scope="module")
def checkers():
    with Checkers() as c:
        yield c


def test_a_run_writes_a_row_per_problem_and_a_summary(tmp_path, settings, checkers):
    data = write_set(tmp_path / "set.jsonl", extra=['{"question": "no answer here"}', "not json"])
    out = tmp_path / "run"
    summary = run_eval(out, data=data, model=scripted(), concurrency=3, settings=settings, checkers=checkers)
    rows = [json.loads(line) for line in (out / ROWS).read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == [f"set-{i}" for i in range(8)]
    by_id = {r["id"]: r for r in rows}
    first = by_id["set-0"]
    assert first["gold"] == "7" and first["prediction"] == "7" and first["graph"] == "direct"
    assert first["model"] == "fake:test" and first["completion_tokens"] > 0 and first["seconds"] > 0
    assert first["correct"] == {"strict": True, "flexible": True, "math_verify": True}
    assert by_id["set-2"]["correct"] == {"strict": False, "flexible": True, "math_verify": True}  # no marker
    assert by_id["set-3"]["extracted"]["strict"] == "7.5"
    assert by_id["set-5"]["correct"]["strict"] is False and by_id["set-5"]["correct"]["math_verify"]
    assert by_id["set-7"]["parse_failures"] == 1 and by_id["set-7"]["retries"] == 1
    assert by_id["set-7"]["prediction"] is None
    r = summary.results
    assert r.problems == 8 and r.correct == {"strict": 4, "flexible": 6, "math_verify": 6}
    assert r.accuracy["math_verify"] == pytest.approx(6 / 8) and r.errors == 0 and r.parse_failures == r.retries == 1
    assert summary.complete and summary.timing.problems_per_second > 0
    s = summary.settings
    assert [k.line for k in s.skipped] == [9, 10] and s.model == "fake:test" and s.graph == "direct"
    assert "Answer: <number>" in s.system_prompt and s.max_tokens == settings.max_new_tokens
    assert summary.environment.machine["cores"] >= 1 and summary.environment.git_commit
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["results"] == summary.results.model_dump(mode="json")
    # the whole trajectories are kept beside the rows, as training data
    trajs = [Trajectory.model_validate_json(x) for x in (out / TRAJECTORIES).read_text().splitlines()]
    assert sorted(t.thread_id for t in trajs) == sorted(by_id)
    t0 = next(t for t in trajs if t.thread_id == "set-0")
    assert t0.gold_answer == "7" and t0.correct and t0.steps[0].completion


def test_limit_and_seed_pick_a_deterministic_subset(tmp_path, settings, checkers):
    data = write_set(tmp_path / "set.jsonl")
    a = run_eval(tmp_path / "a", data=data, model=scripted(), limit=3, seed=7, settings=settings, checkers=checkers)
    b = run_eval(tmp_path / "b", data=data, model=scripted(), limit=3, seed=7, settings=settings, checkers=checkers)
    ids = [json.loads(x)["id"] for x in (tmp_path / "a" / ROWS).read_text().splitlines()]
    assert len(ids) == 3 and a.settings.problems_digest == b.settings.problems_digest
    assert a.results == b.results


def test_rerun_skips_done_problems_and_repairs_a_torn_last_line(tmp_path, settings, checkers):
    data = write_set(tmp_path / "set.jsonl")
    out = tmp_path / "run"
    full = run_eval(out, data=data, model=scripted(), settings=settings, checkers=checkers)
    lines = (out / ROWS).read_text().splitlines(keepends=True)
    kept = lines[:3]
    (out / ROWS).write_text("".join(kept) + lines[3][:40])  # a kill in the middle of a write
    (out / CHECKPOINTS).unlink()  # so the dropped problems really run again
    for suffix in ("-wal", "-shm"):
        (out / (CHECKPOINTS + suffix)).unlink(missing_ok=True)
    model = scripted()
    again = run_eval(out, data=data, model=model, settings=settings, checkers=checkers)
    dropped = {json.loads(x)["id"] for x in lines[3:]}
    assert len(model.calls) == 5 + ("set-7" in dropped)  # 5 redone; the unparseable one retries once
    ids = [json.loads(x)["id"] for x in (out / ROWS).read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 8
    assert (out / ROWS).read_text().startswith("".join(kept))
    assert again.results == full.results


def test_finished_but_unwritten_problems_come_back_from_the_checkpoints(tmp_path, settings, checkers):
    data = write_set(tmp_path / "set.jsonl")
    out = tmp_path / "run"
    full = run_eval(out, data=data, model=scripted(), settings=settings, checkers=checkers)
    lines = (out / ROWS).read_text().splitlines(keepends=True)
    (out / ROWS).write_text("".join(lines[:2]))  # as if killed before 6 rows were written
    model = scripted()
    again = run_eval(out, data=data, model=model, settings=settings, checkers=checkers)
    assert model.calls == []  # nothing regenerated
    assert again.results == full.results and again.timing.sessions == 2


def test_other_settings_are_refused_and_force_starts_over(tmp_path, settings, checkers):
    data = write_set(tmp_path / "set.jsonl")
    out = tmp_path / "run"
    run_eval(out, data=data, model=scripted(), limit=4, settings=settings, checkers=checkers)
    before = (out / ROWS).read_text()
    with pytest.raises(InputError, match="other settings") as err:
        run_eval(out, data=data, model=scripted(), limit=4, max_tokens=50, settings=settings, checkers=checkers)
    assert "max_tokens" in err.value.message and "--force" in err.value.hint
    assert (out / ROWS).read_text() == before  # nothing mixed in, nothing lost
    forced = run_eval(out, data=data, model=scripted(), limit=4, max_tokens=50, force=True,
                      settings=settings, checkers=checkers)
    assert forced.settings.max_tokens == 50 and len((out / ROWS).read_text().splitlines()) == 4


def test_a_failing_problem_is_an_error_row_not_a_crash(tmp_path, settings, checkers):
    data = write_set(tmp_path / "set.jsonl", rows=QUESTIONS[:3])
    model = ScriptedChatModel(rules=[
        Rule(pattern="pie", replies=["x"], fail_times=99, error="server down"),
        Rule(pattern="", replies=["Answer: 7"]),
    ], spec="fake:test")
    summary = run_eval(tmp_path / "run", data=data, model=model, settings=settings, checkers=checkers)
    assert summary.results.errors == 1 and summary.results.problems == 3
    rows = [json.loads(x) for x in (tmp_path / "run" / ROWS).read_text().splitlines()]
    [bad] = [r for r in rows if r["error"]]
    assert "server down" in bad["error"] and not any(bad["correct"].values())


def test_bad_inputs_are_clear_errors(tmp_path, settings, checkers):
    with pytest.raises(InputError, match="no such data file"):
        run_eval(tmp_path / "r1", data=tmp_path / "missing.jsonl", model=scripted(), settings=settings)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(InputError, match="no usable problems"):
        run_eval(tmp_path / "r2", data=empty, model=scripted(), settings=settings)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "a", "answer": "n/a"}\nnot json\n')
    with pytest.raises(InputError, match=r"2 records skipped.*line 1"):
        run_eval(tmp_path / "r3", data=bad, model=scripted(), settings=settings)
    data = write_set(tmp_path / "set.jsonl")
    with pytest.raises(InputError, match="unknown graph 'nope'"):
        run_eval(tmp_path / "r4", data=data, graph="nope", model=scripted(), settings=settings)
    other = tmp_path / "not-a-run"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not an eval run"):
        run_eval(other, data=data, model=scripted(), settings=settings)
    assert (other / "notes.txt").read_text() == "mine"
    with pytest.raises(InputError, match="no adapter 'lora-1'"):
        run_eval(tmp_path / "r5", data=data, model=scripted(), adapter="lora-1", settings=settings,
                 checkers=checkers)
    assert not any(p.name.startswith("r") and (p / ROWS).exists() for p in tmp_path.iterdir())


def test_a_corrupt_row_in_the_middle_is_reported_with_its_line(tmp_path, settings, checkers):
    data = write_set(tmp_path / "set.jsonl")
    out = tmp_path / "run"
    run_eval(out, data=data, model=scripted(), limit=3, settings=settings, checkers=checkers)
    lines = (out / ROWS).read_text().splitlines()
    (out / ROWS).write_text("\n".join([lines[0], "garbage", *lines[1:]]) + "\n")
    with pytest.raises(InputError, match="line 2 is not a row"):
        RunDir(out).rows()


def test_shots_put_worked_gsm8k_examples_in_the_prompt(tmp_path, settings, checkers):
    data = write_set(tmp_path / "set.jsonl", rows=QUESTIONS[:2])
    model = scripted(rows=QUESTIONS[:2])
    summary = run_eval(tmp_path / "run", data=data, model=model, shots=2, settings=settings, checkers=checkers)
    assert summary.settings.shot_ids == ["gsm8k-train-0", "gsm8k-train-1"]
    assert "Example 2:" in model.calls[0]["prompt"] and "Natalia" in model.calls[0]["prompt"]


@pytest.mark.slow
def test_smollm_through_the_harness(tmp_path, settings, smol, checkers):
    summary = run_eval(tmp_path / "run", model=smol, limit=2, concurrency=2, max_tokens=32,
                       settings=settings, checkers=checkers)
    r = summary.results
    assert r.problems == 2 and r.errors == 0 and r.mean_completion_tokens > 10
    assert summary.settings.dataset == "gsm8k-test" and summary.settings.model == SMOL


def test_rescore_checks_stored_responses_again_without_generating(tmp_path, settings, checkers):
    data = write_set(tmp_path / "set.jsonl")
    out = tmp_path / "run"
    model = scripted()
    first = run_eval(out, data=data, model=model, settings=settings, checkers=checkers)
    calls = len(model.calls)
    # as if an older checker had scored the run: every row wrong, another version recorded
    rows = [json.loads(x) for x in (out / ROWS).read_text().splitlines()]
    for r in rows:
        r["correct"] = {c: False for c in r["correct"]}
    (out / ROWS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = json.loads((out / "config.json").read_text())
    config["checkers"]["strict"] = "studyhall-strict/0"
    (out / "config.json").write_text(json.dumps(config))

    again = rescore(out, checkers=checkers)
    assert again.results == first.results and len(model.calls) == calls
    assert again.settings.checkers == first.settings.checkers
    assert json.loads((out / "summary.json").read_text())["results"] == first.results.model_dump(mode="json")
    with pytest.raises(InputError, match="not an eval run"):
        rescore(tmp_path)


def test_sampling_graphs_keep_their_own_temperature_unless_one_is_given(tmp_path, settings, checkers):
    data = write_set(tmp_path / "set.jsonl")
    model = scripted()
    summary = run_eval(tmp_path / "vote", data=data, graph="vote", graph_options={"k": 2, "first": 2, "verify": False},
                       limit=2, model=model, settings=settings, checkers=checkers)
    assert summary.settings.temperature is None and summary.results.errors == 0
    assert {c["options"].get("temperature") for c in model.calls} == {0.7}  # vote's default, not greedy
    model = scripted()
    run_eval(tmp_path / "vote-hot", data=data, graph="vote", graph_options={"k": 2, "first": 2, "verify": False},
             limit=2, temperature=1.1, model=model, settings=settings, checkers=checkers)
    assert {c["options"].get("temperature") for c in model.calls} == {1.1}
