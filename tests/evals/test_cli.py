"""`studyhall eval` and `studyhall eval compare` as real subprocesses: a run killed with
SIGKILL and restarted finishes with the same results, compare draws its table and plot, and
bad input is one clear message."""

import json
import os
import signal
import subprocess
import time

from studyhall.evals.checkers import Checkers
from studyhall.evals.harness import ROWS, SESSIONS, run_eval

from ..conftest import studyhall_cmd

WORDS = ["apples", "pears", "plums", "kiwis", "limes", "dates", "figs", "grapes",
         "melons", "mangos", "olives", "cherries", "lemons", "peaches", "berries", "quinces"]


def make_set(tmp_path):
    """16 problems; each one's first model call fails, so the graph's backend retry policy
    waits 0.5-1.5 s: a real delay that leaves time to kill the run mid-way."""
    data = tmp_path / "fruit.jsonl"
    data.write_text("".join(json.dumps({"question": f"Sue has {i} {w} and buys {i + 1} more. How many {w}?",
                                        "answer": str(2 * i + 1)}) + "\n" for i, w in enumerate(WORDS)))
    rules = [{"pattern": w, "fail_times": 1,
              "replies": [f"{i} + {i + 1} = {2 * i + 1}\nAnswer: {2 * i + 1 if i % 3 else 2 * i}"]}
             for i, w in enumerate(WORDS)]
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"rules": rules}))
    return data, script


def eval_cmd(data, script, out, *extra):
    return studyhall_cmd("eval", "--data", str(data), "--model", f"fake:{script}", "--out", str(out),
                         "--concurrency", "4", "--no-progress", *extra)


def test_killed_run_resumes_to_the_same_results(tmp_path):
    data, script = make_set(tmp_path)
    out = tmp_path / "runs" / "killed"
    proc = subprocess.Popen(eval_cmd(data, script, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    rows_file = out / ROWS
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if rows_file.exists() and len(rows_file.read_bytes().splitlines()) >= 4:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    partial = rows_file.read_text().splitlines()
    assert 4 <= len(partial) < 16, "the kill should land mid-run"
    assert not (out / "summary.json").exists()

    done = subprocess.run(eval_cmd(data, script, out), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()]
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == 16
    assert rows_file.read_text().splitlines()[: len(partial)] == partial  # earlier rows kept as they were
    assert {r["session"] for r in rows[len(partial):]} == {1}
    assert len((out / SESSIONS).read_text().splitlines()) == 2
    resumed = json.loads((out / "summary.json").read_text())

    with Checkers() as checkers:
        whole = run_eval(tmp_path / "runs" / "whole", data=data, model=f"fake:{script}", concurrency=4,
                         checkers=checkers)
    assert resumed["results"] == whole.results.model_dump(mode="json")
    assert resumed["settings"] == whole.settings.model_dump(mode="json")
    assert resumed["results"]["accuracy"]["strict"] == 10 / 16  # i % 3 == 0 answers are wrong
    assert "accuracy strict" in done.stdout and "62.5%" in done.stdout


def test_compare_prints_a_table_and_draws_a_plot(tmp_path):
    data, script = make_set(tmp_path)
    fast = tmp_path / "fast.json"
    fast.write_text(json.dumps({"default": "The sum is 3.\nAnswer: 3"}))
    with Checkers() as checkers:
        run_eval(tmp_path / "runs" / "a", data=data, model=f"fake:{fast}", limit=4, checkers=checkers)
        run_eval(tmp_path / "runs" / "b", data=data, model=f"fake:{fast}", limit=4, max_tokens=99,
                 checkers=checkers)
    out = subprocess.run(studyhall_cmd("eval", "compare", str(tmp_path / "runs" / "a"), str(tmp_path / "runs" / "b")),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "accuracy math_verify" in out.stdout and "25.0%" in out.stdout  # only problem 1 has answer 3
    png = tmp_path / "runs" / "compare.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def run(*args, env=None):
    return subprocess.run(studyhall_cmd(*args), capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_bad_input_is_one_clear_message(tmp_path):
    data, script = make_set(tmp_path)
    missing = run("eval", "--data", str(tmp_path / "nope.jsonl"), "--model", f"fake:{script}",
                  "--out", str(tmp_path / "r"))
    assert missing.returncode == 2 and "no such data file" in missing.stderr
    graph = run("eval", "--data", str(data), "--graph", "nope", "--model", f"fake:{script}",
                "--out", str(tmp_path / "r"))
    assert graph.returncode == 2 and "unknown graph 'nope'" in graph.stderr and "direct" in graph.stderr
    option = run("eval", "--data", str(data), "--model", f"fake:{script}", "-o", "k8", "--out", str(tmp_path / "r"))
    assert option.returncode == 2 and "KEY=VALUE" in option.stderr
    nothing = run("eval", "compare", str(tmp_path / "none"))
    assert nothing.returncode == 2 and "no such run folder" in nothing.stderr
    for out in (missing, graph, option, nothing):
        assert "Traceback" not in out.stderr
    assert not (tmp_path / "r").exists()


def test_a_different_run_in_out_is_refused(tmp_path):
    data, _ = make_set(tmp_path)
    fast = tmp_path / "fast.json"
    fast.write_text(json.dumps({"default": "Answer: 3"}))
    first = run("eval", "--data", str(data), "--model", f"fake:{fast}", "--limit", "2",
                "--out", str(tmp_path / "r"), env={"COLUMNS": "200"})
    assert first.returncode == 0, first.stderr
    assert "2/2" in first.stderr and "math_verify 50.0%" in first.stderr and "problems/s" in first.stderr  # the bar
    second = run("eval", "--data", str(data), "--model", f"fake:{fast}", "--limit", "3",
                 "--out", str(tmp_path / "r"), "--no-progress")
    assert second.returncode == 2 and "other settings" in second.stderr and "limit: 2 in the run, 3 now" in second.stderr
    assert "--force" in second.stderr and "Traceback" not in second.stderr
    assert len((tmp_path / "r" / ROWS).read_text().splitlines()) == 2


def test_help_shows_the_run_options_and_compare():
    out = run("eval", "--help")
    assert out.returncode == 0
    for word in ("--graph", "--concurrency", "--limit", "--seed", "--split", "--out", "compare"):
        assert word in out.stdout
