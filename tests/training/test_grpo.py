"""GRPO on SmolLM2: a few steps, every reward logged on its own, LoRA parameters change."""

import pytest

from studyhall.training.runs import train

from .conftest import Snapshot, length_reward, logged, tiny

pytestmark = pytest.mark.slow


def test_grpo_logs_each_reward_and_updates_lora(tmp_path, settings, traj_file):
    out = tmp_path / "grpo"
    snap = Snapshot()
    cfg = tiny("grpo", max_steps=2, batch_size=2, num_generations=2, max_completion_length=10, learning_rate=1e-3)
    meta = train("grpo", traj_file, out, config=cfg, settings=settings, callbacks=[snap],
                 extra_rewards=[length_reward])
    assert snap.before and snap.unchanged() == []
    steps = [h for h in logged(out) if "reward" in h]
    assert len(steps) == 2
    for h in steps:
        for name in ("correctness", "format", "length"):
            assert f"rewards/{name}/mean" in h
    assert meta.method == "grpo" and meta.data_size == 5
    assert meta.config["rewards"] == {"correctness": 1.0, "format": 0.2, "novelty": 0.0}
    assert "rewards/correctness/mean" in meta.metrics
