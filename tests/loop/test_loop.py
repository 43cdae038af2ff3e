"""The loop's control flow with scripted steps: promotion, rejection, resume after kill -9
at every step, the lock, the schedule, history/report/rollback."""

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from safetensors.numpy import load_file

from studyhall.errors import ConfigError
from studyhall.training.loop.config import LoopConfig, load_loop_config
from studyhall.training.loop.runner import STEPS, Loop
from studyhall.training.loop.schedule import Schedule, parse_interval
from studyhall.training.loop.significance import paired_test
from studyhall.training.loop.state import read_champion

from .fakes import FakeSteps


def make_loop(tmp_path: Path, candidate: float = 0.7, **promote) -> tuple[Loop, FakeSteps]:
    config = LoopConfig(state_dir=tmp_path / "state", registry=tmp_path / "registry",
                        promote=promote or {"margin": 0.05, "alpha": 0.05})
    steps = FakeSteps(candidate=candidate)
    return Loop(config, steps=steps, log=lambda _m: None), steps


def test_better_candidate_is_promoted_atomically(tmp_path):
    loop, steps = make_loop(tmp_path, candidate=0.7)
    it = loop.run_iteration()
    assert it["decision"] == "promoted" and steps.calls == ["collect", "build", "train", "evaluate"]
    champ = read_champion(loop.config.state_dir)
    assert champ.adapter.endswith("iterations/0001/candidate") and champ.dev_accuracy == 0.7
    assert it["summary"]["candidate_accuracy"] == 0.7 and it["summary"]["champion_accuracy"] == 0.5
    published = tmp_path / "registry" / "champion" / "adapter_model.safetensors"  # what servers bound to it load
    assert published.read_bytes() == (Path(champ.adapter) / "adapter_model.safetensors").read_bytes()
    second = loop.run_iteration()  # the next iteration collects with the new champion
    assert json.loads((loop.config.state_dir / "iterations/0002/collected.jsonl").read_text().splitlines()[0])["champion"] == champ.adapter
    assert second["n"] == 2


@pytest.mark.parametrize(("candidate", "why"), [(0.4, "below margin"), (0.53, "below margin"), (0.5, "below margin")])
def test_worse_or_equal_candidate_is_rejected(tmp_path, candidate, why):
    loop, _ = make_loop(tmp_path, candidate=candidate)
    it = loop.run_iteration()
    assert it["decision"] == "rejected" and why in it["reason"]
    assert read_champion(loop.config.state_dir) is None and not (tmp_path / "registry").exists()


def test_gain_that_is_not_significant_is_rejected(tmp_path):
    loop, _ = make_loop(tmp_path, candidate=0.53, margin=0.0, alpha=0.05)
    it = loop.run_iteration()
    assert it["decision"] == "rejected" and "not significant" in it["reason"]


def test_paired_sign_test():
    a = {str(i): i < 60 for i in range(100)}
    b = {str(i): i < 50 for i in range(100)}
    cmp = paired_test(a, b)
    assert (cmp.candidate_only, cmp.champion_only) == (10, 0) and cmp.p_value == pytest.approx(2**-10)
    assert paired_test(b, a).p_value == 1.0
    with pytest.raises(ValueError):
        paired_test({"x": True}, {"y": True})


def write_config(tmp_path: Path, **extra) -> Path:
    cfg = tmp_path / "loop.toml"
    lines = ['state_dir = "state"', 'registry = "registry"', 'steps = "tests.loop.fakes:make_steps"', 'every = "6h"',
             "[promote]", "margin = 0.05", "alpha = 0.05"]
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def loop_cmd(cfg: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "studyhall", "loop", *args, "--config", str(cfg)]


def start_and_kill_in(cfg: Path, step: str) -> None:
    env = {**os.environ, "FAKE_LOOP_HANG": step}
    proc = subprocess.Popen(loop_cmd(cfg, "run", "--once"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, cwd=Path(__file__).resolve().parents[2])
    deadline = time.time() + 120
    for line in proc.stdout:
        if f"{step}: started" in line:
            time.sleep(0.5)  # let it get into the step's work
            break
        assert time.time() < deadline
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)


@pytest.mark.parametrize("step", ["collect", "build", "train", "evaluate"])
def test_kill_9_in_any_step_then_resume(tmp_path, step):
    cfg = write_config(tmp_path)
    start_and_kill_in(cfg, step)
    state = load_loop_config(cfg).state_dir
    before = Loop(load_loop_config(cfg), steps=FakeSteps()).state.steps(1)
    assert step not in before and all(s in before for s in STEPS[: STEPS.index(step)])
    assert read_champion(state) is None  # nothing half-done became champion
    out = subprocess.run(loop_cmd(cfg, "run", "--once"), capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2], timeout=300)
    assert out.returncode == 0, out.stderr
    started = [line.split("]")[1].split(":")[0].strip() for line in out.stdout.splitlines() if ": started" in line]
    assert started == list(STEPS[STEPS.index(step):])  # finished steps were not redone
    loop = Loop(load_loop_config(cfg), steps=FakeSteps())
    [it] = loop.state.iterations()
    assert it["status"] == "done" and it["decision"] == "promoted"
    ids = [json.loads(x)["id"] for x in (state / "iterations/0001/collected.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 20  # no trajectory lost or duplicated
    assert read_champion(state).adapter.endswith("0001/candidate")


def test_one_loop_per_state_folder(tmp_path):
    cfg = write_config(tmp_path)
    env = {**os.environ, "FAKE_LOOP_HANG": "collect"}
    first = subprocess.Popen(loop_cmd(cfg, "run", "--once"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env=env, cwd=Path(__file__).resolve().parents[2])
    try:
        for line in first.stdout:
            if "collect: started" in line:
                break
        second = subprocess.run(loop_cmd(cfg, "run", "--once"), capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parents[2], timeout=120)
        assert second.returncode == 2 and "already running" in second.stderr and f"pid {first.pid}" in second.stderr
    finally:
        first.kill()
        first.wait(30)


def test_schedule_parsing_and_next_run():
    assert parse_interval("6h") == timedelta(hours=6) and parse_interval("1h30m") == timedelta(minutes=90)
    for bad in ("", "6", "soon", "6x", "-1h"):
        with pytest.raises(ValueError):
            parse_interval(bad)
    t = datetime(2026, 11, 29, 22, 31)
    every = Schedule.from_config("6h", None)
    assert every.next_run(t, None) == t
    assert every.next_run(t, t - timedelta(hours=1)) == t + timedelta(hours=5)
    assert every.next_run(t, t - timedelta(hours=9)) == t
    cron = Schedule.from_config(None, "0 */6 * * *")
    assert cron.next_run(t) == datetime(2026, 11, 30, 0, 0)
    with pytest.raises(ValueError, match="cron"):
        Schedule.from_config(None, "every day")


def test_bad_config_is_a_clear_error(tmp_path):
    cfg = tmp_path / "loop.toml"
    cfg.write_text('every = "sometimes"\n[promote]\nmargin = 2\n')
    with pytest.raises(ConfigError) as info:
        load_loop_config(cfg)
    assert "bad interval" in str(info.value) or "margin" in str(info.value)
    with pytest.raises(ConfigError, match="no loop config"):
        load_loop_config(tmp_path / "missing.toml")


def test_scheduled_run_waits_for_the_next_slot(tmp_path):
    loop, _ = make_loop(tmp_path)
    waits = []
    loop.run(max_iterations=2, sleep=waits.append)
    assert len(loop.state.iterations()) == 2
    assert len(waits) == 1 and 6 * 3600 - 120 < waits[0] <= 6 * 3600  # the second waits ~6h after the first start


def test_history_report_and_rollback_cli(tmp_path):
    cfg = write_config(tmp_path)
    root = Path(__file__).resolve().parents[2]
    for _ in range(2):
        assert subprocess.run(loop_cmd(cfg, "run", "--once"), capture_output=True, cwd=root, timeout=300).returncode == 0
    hist = subprocess.run(loop_cmd(cfg, "history"), capture_output=True, text=True, cwd=root)
    assert hist.returncode == 0 and "promoted" in hist.stdout
    report = subprocess.run(loop_cmd(cfg, "report"), capture_output=True, text=True, cwd=root)
    png = Path(report.stdout.split("wrote ")[1].strip())
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    state = load_loop_config(cfg).state_dir
    assert read_champion(state).adapter.endswith("0002/candidate")
    back = subprocess.run(loop_cmd(cfg, "rollback", "1"), capture_output=True, text=True, cwd=root)
    assert back.returncode == 0 and read_champion(state).adapter.endswith("0001/candidate")
    published = tmp_path / "registry" / "champion" / "adapter_model.safetensors"
    assert load_file(str(published))["lora_A.weight"][0, 0] == 1.0  # iteration 1's weights
    base = subprocess.run(loop_cmd(cfg, "rollback", "0"), capture_output=True, text=True, cwd=root)
    assert base.returncode == 0 and read_champion(state).adapter is None
    assert not load_file(str(published))["lora_A.weight"].any()  # the base: the same adapter, zeroed
    status = subprocess.run(loop_cmd(cfg, "status"), capture_output=True, text=True, cwd=root)
    assert "champion: base model" in status.stdout
