"""``studyhall train`` as a real subprocess: bad data errors, and resume after SIGKILL."""

import json
import os
import signal
import subprocess
import time

import pytest

from ..conftest import SMOL, studyhall_cmd
from .conftest import logged, simple, write_jsonl

TINY = ["--model", SMOL, "--threads", "1", "--lora-r", "8", "--batch-size", "1", "--grad-accum", "1",
        "--max-length", "128", "-o", 'lora.target_modules=["q_proj","v_proj"]', "-o", "warmup_ratio=0"]


def run(*args, timeout=900):
    return subprocess.run(studyhall_cmd("train", *args), capture_output=True, text=True, timeout=timeout)


def test_empty_file_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    out = run("sft", "--data", str(empty), "--out", str(tmp_path / "a"), *TINY)
    assert out.returncode == 2 and "holds no trajectories" in out.stderr and "Traceback" not in out.stderr


def test_a_bad_row_is_named(tmp_path):
    data = tmp_path / "t.jsonl"
    data.write_text(simple("What is 2 + 3?", "Answer: 5", "5").model_dump_json() + "\n[1, 2]\n")
    out = run("sft", "--data", str(data), "--out", str(tmp_path / "a"), *TINY)
    assert out.returncode == 2 and f"{data} line 2: not a trajectory" in out.stderr
    data.write_text(simple("What is 2 + 3?", "Answer: 5", None).model_dump_json() + "\n")
    out = run("dpo", "--data", str(data), "--out", str(tmp_path / "a"), *TINY)
    assert out.returncode == 2 and "line 1: question 'What is 2 + 3?' has no gold answer" in out.stderr
    assert "--skip-bad-rows" in out.stderr


def test_bad_option_names_the_field(tmp_path):
    data = write_jsonl(tmp_path / "t.jsonl", [simple("What is 2 + 3?", "Answer: 5", "5")])
    out = run("sft", "--data", str(data), "--out", str(tmp_path / "a"), "-o", "lora.r=12")
    assert out.returncode == 2 and "lora.r = 12" in out.stderr
    out = run("grpo", "--data", str(data), "--out", str(tmp_path / "a"), "--batch-size", "3")
    assert out.returncode == 2 and "must be a multiple of num_generations (4)" in out.stderr and "{" not in out.stderr


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    rows = [simple(f"What is {a} + {b}?", f"{a} + {b} = {a + b}\nAnswer: {a + b}", str(a + b))
            for a, b in ((2, 3), (4, 4), (7, 1), (5, 6))]
    data = write_jsonl(tmp_path / "t.jsonl", rows)
    out = tmp_path / "adapters" / "resumed"
    args = ["sft", "--data", str(data), "--out", str(out), "--max-steps", "4", "--save-steps", "1", *TINY]
    proc = subprocess.Popen(studyhall_cmd("train", *args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 900
    try:
        while not list(out.glob("checkpoints/checkpoint-*/trainer_state.json")):
            assert proc.poll() is None, "the run ended before writing a checkpoint"
            assert time.time() < deadline, "no checkpoint within the deadline"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "adapter_config.json").exists()  # nothing half-published
    done = sorted(int(p.parent.name.split("-")[1]) for p in out.glob("checkpoints/checkpoint-*/trainer_state.json"))
    assert done and done[-1] < 4

    again = run(*args, "--json")
    assert again.returncode == 0, again.stderr
    meta = json.loads(again.stdout)
    resumed = meta["metrics"]["resumed_from_step"]
    assert resumed >= done[-1] >= 1 and meta["metrics"]["steps"] == 4
    assert f"resumed from checkpoint-{resumed}" in again.stderr
    assert [h["step"] for h in logged(out) if "loss" in h] == [1, 2, 3, 4]  # continued, not restarted
    assert (out / "adapter_model.safetensors").exists() and not (out / "checkpoints").exists()

    refused = run(*args)  # a finished adapter is not silently replaced
    assert refused.returncode == 2 and "already holds a finished adapter" in refused.stderr

    # `studyhall solve --adapter` serves it, and the trajectory records which adapter answered
    solved = subprocess.run(studyhall_cmd("solve", "What is 2 + 3?", "--model", SMOL, "--adapter", str(out),
                                          "--max-tokens", "8", "--json"), capture_output=True, text=True, timeout=900)
    assert solved.returncode == 0, solved.stderr
    assert json.loads(solved.stdout)["adapter"] == str(out.resolve())
