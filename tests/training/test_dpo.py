"""DPO on SmolLM2 over pairs from real graph trajectories."""

import pytest

from studyhall.training.runs import train

from .conftest import Snapshot, logged, tiny

pytestmark = pytest.mark.slow


def test_dpo_trains_lora_on_correct_vs_incorrect_pairs(tmp_path, settings, traj_file):
    out = tmp_path / "dpo"
    snap = Snapshot()
    meta = train("dpo", traj_file, out, config=tiny("dpo", max_steps=3, learning_rate=1e-3), settings=settings,
                 callbacks=[snap])
    assert snap.before and snap.unchanged() == []
    assert meta.method == "dpo" and meta.data_size == 6 and meta.metrics["steps"] == 3
    steps = [h for h in logged(out) if "rewards/margins" in h]
    assert len(steps) == 3 and steps[-1]["rewards/margins"] > 0  # chosen pulled above rejected
    assert (out / "adapter_model.safetensors").exists()
