"""The loop's real steps: the pool and dev split, teacher problems, the trajectory log, empty
datasets (no model), and, marked slow, whole iterations on SmolLM2 with a kill -9 mid-train."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from studyhall.errors import ConfigError
from studyhall.memory.trajectory_store import TrajectoryStore
from studyhall.records import Trajectory
from studyhall.training.adapters import read_metadata
from studyhall.training.loop.config import LoopConfig, load_loop_config
from studyhall.training.loop.runner import STEPS, IterationContext, Loop, adapter_is_complete
from studyhall.training.loop.state import Champion, LoopState, now, read_champion
from studyhall.training.loop.steps import (
    TRAJECTORIES_FILE,
    RealSteps,
    TrajectoryLog,
    qkey,
    read_log,
)

from ..conftest import SMOL

REPO = Path(__file__).resolve().parents[2]
TINY_TRAIN = {"max_steps": 2, "save_steps": 1, "lora.r": 8, "lora.alpha": 16, "lora.target_modules": ["q_proj", "v_proj"],
              "max_length": 192, "batch_size": 1, "grad_accum": 1, "warmup_ratio": 0.0, "threads": 2}


def write_pool(path: Path, n: int = 12) -> Path:
    """Easy problems (SmolLM2-135M solves most of them), so SFT has rows to train on."""
    pairs = [(2, 3), (4, 1), (5, 5), (3, 3), (6, 2), (7, 1), (1, 1), (8, 2), (2, 2), (9, 1), (4, 4), (3, 2)][:n]
    with open(path, "w") as f:
        for i, (a, b) in enumerate(pairs):
            q = f"Tom has {a} apples and buys {b} more. How many apples does Tom have now?"
            f.write(json.dumps({"id": f"p{i}", "question": q, "answer": str(a + b)}) + "\n")
    return path


def loop_config(tmp_path: Path, **collect) -> dict:
    return {
        "state_dir": str(tmp_path / "state"), "model": SMOL, "every": "6h", "seed": 3,
        "collect": {"data": str(write_pool(tmp_path / "pool.jsonl")), "problems": 4, "graphs": ["direct"],
                    "graph_options": {}, "teach": False, "concurrency": 4, "max_tokens": 40, **collect},
        "data": {"method": "sft", "replay": 0.5},
        "train": {"options": TINY_TRAIN},
        "eval": {"dev_size": 4, "max_tokens": 40, "concurrency": 4, "checker": "flexible"},
        "promote": {"margin": 0.0, "alpha": 1.0},
    }


def context(config: LoopConfig, n: int, champion: str | None = None) -> IterationContext:
    folder = config.state_dir / "iterations" / f"{n:04d}"
    folder.mkdir(parents=True, exist_ok=True)
    champ = Champion(adapter=champion, iteration=n - 1, at=now()) if champion else None
    return IterationContext(n=n, config=config, dir=folder, champion=champ, log=lambda _m: None)


def traj(tid: str, question: str, gold: str, **kw) -> Trajectory:
    return Trajectory(id=tid, thread_id=tid, question=question, graph=kw.pop("graph", "direct"), model="m",
                      gold_answer=gold, **kw)


# ---------------------------------------------------------------------------- no model
def test_dev_set_is_fixed_held_out_and_draws_prefer_new_problems(tmp_path):
    config = LoopConfig.model_validate(loop_config(tmp_path))
    steps = RealSteps(config)
    pool, dev = steps.problems()
    dev_ids = {p.id for p in dev}
    assert len(dev) == 4 and len(pool) == 8 and not dev_ids & {p.id for p in pool}
    first = steps.draw(context(config, 1), pool)
    again = steps.draw(context(config, 1), pool)  # a re-run draws the very same problems
    second = steps.draw(context(config, 2), pool)
    assert [p.id for p in first] == [p.id for p in again] and len(first) == 4
    assert not {p.id for p in first} & {p.id for p in second}  # the 4 not collected yet come first
    assert not dev_ids & {p.id for p in first + second}
    changed = LoopConfig.model_validate({**loop_config(tmp_path), "eval": {"dev_size": 4, "dev_seed": 99}})
    with pytest.raises(ConfigError, match="dev set"):
        RealSteps(changed).problems()


def test_teacher_problems_join_the_pool_but_never_dev_ones(tmp_path):
    config = LoopConfig.model_validate(loop_config(tmp_path))
    steps = RealSteps(config)
    pool, dev = steps.problems()
    new = [{"question": "Ann has 3 pens and finds 4. How many pens now?", "answer": "7", "solution": "3+4=7"},
           {"question": dev[0].question.upper(), "answer": dev[0].answer}]  # reads like a dev question
    run = traj("t1", pool[0].question, pool[0].answer, graph="teach", metadata={"new_problems": new})
    assert steps._keep_teacher_problems(1, [run, run], {qkey(p.question) for p in dev}) == 1
    pool2, _ = steps.problems()
    added = [p for p in pool2 if p.id.startswith("teach-")]
    assert [(p.question, p.answer) for p in added] == [(new[0]["question"], "7")]


def test_trajectory_log_repairs_a_torn_line_and_keeps_one_per_thread(tmp_path):
    path = tmp_path / TRAJECTORIES_FILE
    log = TrajectoryLog(path)
    log.add(traj("a", "q1", "1"))
    log.add(traj("a", "q1", "1"))
    log.close()
    with open(path, "a") as f:
        f.write('{"id": "b", "thread_id": "b", "quest')  # killed mid-write
    log = TrajectoryLog(path)
    log.add(traj("b", "q2", "2"))
    log.close()
    assert [t.id for t in read_log(path)] == ["a", "b"]


def test_no_correct_run_means_no_rows_and_a_rejection_with_the_reason(tmp_path):
    config = LoopConfig.model_validate(loop_config(tmp_path))
    steps = RealSteps(config)
    ctx = context(config, 1)
    log = TrajectoryLog(ctx.dir / TRAJECTORIES_FILE)
    log.add(traj("w", "What is 2+2?", "4", final_answer="5", correct=False))
    log.close()
    ctx.results["build"] = built = steps.build(ctx)
    assert built["rows"] == 0 and "no correct solutions" in built["reason"]
    ctx.results["train"] = trained = steps.train(ctx)
    assert trained["adapter"] is None
    ctx.results["evaluate"] = steps.evaluate(ctx)
    promoted = Loop(config, steps=steps, log=lambda _m: None)._promote(ctx)
    assert promoted["decision"] == "rejected" and "no correct solutions" in promoted["reason"]


# ---------------------------------------------------------------------------- SmolLM2
def dev_ids(state: Path) -> set[str]:
    return {json.loads(line)["id"] for line in (state / "dev.jsonl").read_text().splitlines()}


@pytest.mark.slow
def test_one_real_iteration_then_the_next_starts_from_the_champion(tmp_path, settings):
    config = LoopConfig.model_validate(loop_config(tmp_path))
    steps = RealSteps(config, settings)
    loop = Loop(config, steps=steps, log=lambda _m: None)
    it = loop.run_iteration()
    state = config.state_dir
    trajs = read_log(state / "iterations/0001" / TRAJECTORIES_FILE)
    assert len(trajs) == 4 and all(t.correct is not None and t.adapter is None for t in trajs)
    with TrajectoryStore(settings.trajectory_db) as store:
        assert {t.id for t in store.query()} >= {t.id for t in trajs}
    collected = {t.metadata["problem_id"] for t in trajs}
    assert not collected & dev_ids(state)
    adapter = state / "adapters/iter-0001"
    assert adapter_is_complete(adapter) and read_metadata(adapter).parent is None
    assert it["status"] == "done" and it["decision"] in ("promoted", "rejected")
    s = it["summary"]
    assert 0 <= s["candidate_accuracy"] <= 1 and 0 <= s["champion_accuracy"] <= 1 and s["train_rows"] > 0
    ev = loop.state.step_result(1, "evaluate")
    assert set(ev["candidate"]) == set(ev["champion"]) == dev_ids(state) and ev["checker"] == "flexible"

    if it["decision"] != "promoted":  # make it champion by hand: what follows is about iteration 2
        loop.state.set_champion(Champion(adapter=str(adapter), iteration=1, at=now()), note="test")
    champion = read_champion(state)
    assert champion.adapter == str(adapter)
    ctx = context(config, 2, champion.adapter)
    ctx.results["collect"] = steps.collect(ctx)
    ctx.results["build"] = built = steps.build(ctx)
    ctx.results["train"] = trained = steps.train(ctx)
    second = read_log(ctx.dir / TRAJECTORIES_FILE)
    assert {t.adapter for t in second} == {champion.adapter}
    assert not {t.metadata["problem_id"] for t in second} & (collected | dev_ids(state))
    assert built["replayed"] == 2 and built["trajectories"] == 4
    assert read_metadata(trained["adapter"]).parent == champion.adapter == trained["parent"]
    # The champion was iteration 1's candidate: its dev rows are reused, not generated again.
    second_eval = steps.evaluate(ctx)
    assert second_eval["reused"] == {"champion": str(state / "iterations/0001/eval-candidate")}
    assert second_eval["champion"] == ev["candidate"]


def loop_cmd(cfg: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "studyhall", "loop", *args, "--config", str(cfg)]


def write_toml(tmp_path: Path) -> Path:
    c = loop_config(tmp_path)

    def value(v):
        return json.dumps(v) if not isinstance(v, bool) else str(v).lower()

    lines = [f"{k} = {value(v)}" for k, v in c.items() if not isinstance(v, dict)]
    for section in ("collect", "data", "eval", "promote"):
        lines += [f"[{section}]"] + [f"{k} = {value(v)}" for k, v in c[section].items() if k != "graph_options"]
    lines += ["[train.options]"] + [f'"{k}" = {value(v)}' for k, v in TINY_TRAIN.items()]
    cfg = tmp_path / "loop.toml"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


@pytest.mark.slow
def test_kill_9_mid_train_resumes_without_redoing_collect(tmp_path):
    cfg = write_toml(tmp_path)
    config = load_loop_config(cfg)
    state = config.state_dir
    checkpoint = state / "adapters/iter-0001/checkpoints/checkpoint-1/trainer_state.json"
    proc = subprocess.Popen(loop_cmd(cfg, "run", "--once"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=REPO, env=os.environ.copy())
    try:
        deadline = time.time() + 900
        while not checkpoint.exists():  # train has started and saved its first step
            assert proc.poll() is None, "the loop ended before the train step checkpointed"
            assert time.time() < deadline
            time.sleep(0.2)
        done = LoopState(state).steps(1)
        assert "collect" in done and "build" in done and "train" not in done
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    before = read_log(state / "iterations/0001" / TRAJECTORIES_FILE)
    assert read_champion(state) is None and not adapter_is_complete(state / "adapters/iter-0001")

    out = subprocess.run(loop_cmd(cfg, "run", "--once"), capture_output=True, text=True, cwd=REPO, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    started = [line.split("]")[1].split(":")[0].strip() for line in out.stdout.splitlines() if ": started" in line]
    assert started == list(STEPS[STEPS.index("train"):])  # collect and build were not redone
    after = read_log(state / "iterations/0001" / TRAJECTORIES_FILE)
    assert [t.thread_id for t in after] == [t.thread_id for t in before] and len(after) == 4
    [it] = LoopState(state).iterations()
    assert it["status"] == "done" and it["decision"] in ("promoted", "rejected")
    trained = LoopState(state).step_result(1, "train")
    assert trained["metrics"]["resumed_from_step"] >= 1 and trained["metrics"]["steps"] == 2
    assert adapter_is_complete(trained["adapter"])
