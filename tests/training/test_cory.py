"""CORY on SmolLM2: pioneer and observer adapters on one base, shared reward, role swap,
both adapters saved."""

import json

import pytest

from studyhall.training.cory import roles_at
from studyhall.training.runs import train

from .conftest import length_reward, logged, lora_tensors, tiny


def test_roles_swap_every_n_steps():
    one, two = ("one", "two"), ("two", "one")
    assert [roles_at(s, 2) for s in range(5)] == [one, one, two, two, one]


@pytest.mark.slow
def test_cory_trains_both_adapters_swaps_roles_and_saves_both(tmp_path, settings, traj_file):
    out = tmp_path / "pair"
    cfg = tiny("cory", max_steps=2, swap_every=1, batch_size=1, num_generations=2, max_completion_length=8,
               learning_rate=1e-3)
    meta = train("cory", traj_file, out, config=cfg, settings=settings, extra_rewards=[length_reward])
    log = logged(out)
    assert [(e["pioneer"], e["observer"]) for e in log] == [("one", "two"), ("two", "one")]
    assert meta.metrics["swaps_at_steps"] == [2]
    for e in log:  # both roles get the shared reward: pioneer's + observer's
        assert e["reward"] == pytest.approx(e["reward/pioneer"] + e["reward/observer"])
        assert "rewards/correctness/pioneer" in e and "rewards/length/observer" in e
        ex = e["example"]
        assert ex["pioneer"].strip() in ex["observer_prompt"]  # the observer reads the pioneer's answer
    pair = json.loads((out / "studyhall-adapter.json").read_text())
    assert pair["method"] == "cory" and pair["extra"]["adapters"] == ["observer", "pioneer"]
    assert pair["extra"]["identities"] == {"pioneer": "two", "observer": "one"}
    tensors = {}
    for role in ("pioneer", "observer"):
        role_meta = json.loads((out / role / "studyhall-adapter.json").read_text())
        assert role_meta["role"] == role and role_meta["method"] == "cory"
        tensors[role] = lora_tensors(out / role)
        assert all(t.abs().sum() > 0 for k, t in tensors[role].items() if "lora_B" in k)  # moved from zero init
    assert tensors["pioneer"].keys() == tensors["observer"].keys()
    assert any((tensors["pioneer"][k] != tensors["observer"][k]).any() for k in tensors["pioneer"])
