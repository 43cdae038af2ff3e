"""Scripted loop steps for tests: real files, deterministic scores, optional hangs.

Environment (read when the steps are made, so a subprocess can be told what to do):
  FAKE_LOOP_HANG=step        hang inside that step (after writing part of its output)
  FAKE_LOOP_CANDIDATE=0.7    candidate dev accuracy (champion: 0.5 on the same 100 problems)
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from studyhall.training.loop.runner import IterationContext

DEV = [f"dev-{i}" for i in range(100)]


class FakeSteps:
    def __init__(self, config: Any = None, candidate: float | None = None, hang: str | None = None) -> None:
        self.candidate = candidate if candidate is not None else float(os.environ.get("FAKE_LOOP_CANDIDATE", "0.7"))
        self.hang = hang or os.environ.get("FAKE_LOOP_HANG")
        self.calls: list[str] = []

    def _maybe_hang(self, step: str) -> None:
        if self.hang == step:
            time.sleep(3600)

    def collect(self, ctx: IterationContext) -> dict[str, Any]:
        self.calls.append("collect")
        out = ctx.dir / "collected.jsonl"
        done = {json.loads(line)["id"] for line in out.read_text().splitlines()} if out.exists() else set()
        with open(out, "a") as f:
            for i in range(20):
                pid = f"it{ctx.n}-p{i}"
                if pid not in done:
                    f.write(json.dumps({"id": pid, "champion": ctx.champion_adapter}) + "\n")
                    f.flush()
                if i == 10:
                    self._maybe_hang("collect")
        return {"trajectories": 20}

    def build(self, ctx: IterationContext) -> dict[str, Any]:
        self.calls.append("build")
        self._maybe_hang("build")
        rows = len((ctx.dir / "collected.jsonl").read_text().splitlines())
        return {"rows": rows}

    def train(self, ctx: IterationContext) -> dict[str, Any]:
        self.calls.append("train")
        tmp = ctx.dir / "candidate.tmp"
        tmp.mkdir(exist_ok=True)
        (tmp / "adapter_config.json").write_text("{}")
        self._maybe_hang("train")  # killed here: a half-written adapter that must never be champion
        save_file({"lora_A.weight": np.full((2, 2), float(ctx.n), np.float32)}, str(tmp / "adapter_model.safetensors"))
        final = ctx.dir / "candidate"
        if not final.exists():
            tmp.rename(final)
        return {"adapter": str(final), "metrics": {"loss": 0.5}}

    def evaluate(self, ctx: IterationContext) -> dict[str, Any]:
        self.calls.append("evaluate")
        self._maybe_hang("evaluate")
        champ = {pid: i % 2 == 0 for i, pid in enumerate(DEV)}  # 0.5
        right = round(self.candidate * len(DEV))
        # The candidate keeps the champion's right answers where it can, then adds others.
        order = [pid for pid in DEV if champ[pid]] + [pid for pid in DEV if not champ[pid]]
        cand = {pid: pid in set(order[:right]) for pid in DEV}
        return {"candidate": cand, "champion": champ}


def make_steps(config: Any) -> FakeSteps:
    return FakeSteps(config)
