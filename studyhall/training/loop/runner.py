"""Run loop iterations: each step runs once, its result is committed to SQLite, and a
restarted loop skips finished steps and resumes the interrupted one.

    collect -> build -> train -> evaluate -> promote -> record

The step implementations (collecting with graphs, building datasets, training, evaluating)
come from a :class:`LoopSteps` object, so the control flow here — resume, promotion rule,
atomic champion switch, schedule, lock — is the same for the real steps and for scripted
ones in tests. Each step must be safe to re-run after a crash (the real ones are: runs are
keyed by thread id, trainers resume from checkpoints, evals resume from their rows).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from studyhall.errors import StudyhallError
from studyhall.training.loop.config import LoopConfig
from studyhall.training.loop.schedule import Schedule
from studyhall.training.loop.significance import paired_test
from studyhall.training.loop.state import Champion, LoopState, now

STEPS = ("collect", "build", "train", "evaluate", "promote", "record")


class LoopBusyError(StudyhallError):
    """Another loop holds this state folder."""


@dataclass
class IterationContext:
    n: int
    config: LoopConfig
    dir: Path
    champion: Champion | None
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    log: Any = print

    @property
    def champion_adapter(self) -> str | None:
        return self.champion.adapter if self.champion else None


class LoopSteps(Protocol):
    def collect(self, ctx: IterationContext) -> dict[str, Any]: ...
    def build(self, ctx: IterationContext) -> dict[str, Any]: ...
    def train(self, ctx: IterationContext) -> dict[str, Any]:
        """Returns at least {"adapter": path of the verified candidate adapter}."""
        ...
    def evaluate(self, ctx: IterationContext) -> dict[str, Any]:
        """Returns {"candidate": {problem_id: correct}, "champion": {problem_id: correct}, ...}."""
        ...


def load_steps(config: LoopConfig) -> LoopSteps:
    if config.steps:
        module, _, factory = config.steps.partition(":")
        return getattr(importlib.import_module(module), factory or "make_steps")(config)
    from studyhall.training.loop.steps import RealSteps

    return RealSteps(config)


def adapter_is_complete(path: str | Path) -> bool:
    """A folder a backend can load: peft config, weights and studyhall metadata all present."""
    p = Path(path)
    weights = any((p / w).is_file() for w in ("adapter_model.safetensors", "adapter_model.bin"))
    return p.is_dir() and (p / "adapter_config.json").is_file() and weights


class Loop:
    def __init__(self, config: LoopConfig, steps: LoopSteps | None = None, log: Any = None) -> None:
        self.config = config
        self.state = LoopState(config.state_dir)
        self.steps = steps
        self.schedule = Schedule.from_config(config.every, config.cron)
        self.log = log or (lambda msg: print(msg, flush=True))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One loop per state folder: a second gets a clear refusal, not a silent race."""
        path = self.config.state_dir / "loop.lock"
        fh = open(path, "a+")  # noqa: SIM115 - held open (and locked) for the whole with-block
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise LoopBusyError(
                f"a loop is already running on {self.config.state_dir} ({holder})",
                hint="stop it first, or use another state_dir",
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} since {now()}")
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()

    # one iteration ------------------------------------------------------------
    def run_iteration(self) -> dict[str, Any]:
        steps = self.steps or load_steps(self.config)
        n = self.state.open_iteration()
        folder = self.config.state_dir / "iterations" / f"{n:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        ctx = IterationContext(n=n, config=self.config, dir=folder, champion=self.state.champion(), log=self.log)
        for step in STEPS:
            done = self.state.step_result(n, step)
            if done is not None:
                ctx.results[step] = done
                continue
            started, t0 = now(), time.perf_counter()
            self.log(f"[iteration {n}] {step}: started")
            if step == "promote":
                result = self._promote(ctx)
            elif step == "record":
                result = self._record(ctx)
            else:
                result = getattr(steps, step)(ctx)
            result = {**result, "seconds": round(time.perf_counter() - t0, 2)}
            self.state.save_step(n, step, started, result)
            ctx.results[step] = result
            self.log(f"[iteration {n}] {step}: done in {result['seconds']:.1f}s {_brief(result)}")
        return self.state.iterations()[n - 1]

    def _promote(self, ctx: IterationContext) -> dict[str, Any]:
        ev = ctx.results["evaluate"]
        adapter = ctx.results["train"].get("adapter")
        if adapter is None or not adapter_is_complete(adapter):
            why = ctx.results["train"].get("reason")
            reason = f"candidate adapter missing or incomplete: {adapter}" + (f" ({why})" if why else "")
            return {"decision": "rejected", "reason": reason, "comparison": None}
        try:
            cmp = paired_test(ev["candidate"], ev["champion"])
        except ValueError:
            return {"decision": "rejected", "reason": "no dev problem was scored for both candidate and champion",
                    "comparison": None}
        gain = cmp.candidate_accuracy - cmp.champion_accuracy
        p = self.config.promote
        if gain < p.margin or gain <= 0:
            decision, reason = "rejected", f"dev accuracy {cmp.candidate_accuracy:.3f} vs champion {cmp.champion_accuracy:.3f}: gain {gain:+.3f} below margin {p.margin}"
        elif cmp.p_value > p.alpha:
            decision, reason = "rejected", f"gain {gain:+.3f} not significant (p={cmp.p_value:.3f} > {p.alpha}; {cmp.candidate_only} vs {cmp.champion_only} discordant)"
        else:
            decision, reason = "promoted", f"dev accuracy {cmp.candidate_accuracy:.3f} vs {cmp.champion_accuracy:.3f} (gain {gain:+.3f}, p={cmp.p_value:.3f})"
        current = self.state.champion()
        if decision == "promoted":
            if current is None or current.adapter != str(adapter):
                self.state.set_champion(
                    Champion(adapter=str(adapter), iteration=ctx.n, dev_accuracy=cmp.candidate_accuracy, at=now()),
                    note=reason,
                )
            self.publish_champion(str(adapter))  # again after a crash here: idempotent
        return {"decision": decision, "reason": reason, "comparison": cmp.model_dump()}

    def publish_champion(self, adapter: str | None) -> Path | None:
        """Copy the champion to ``registry/publish_as`` (staged, verified, swapped in atomically), so
        whatever serves that name (``--adapter champion``) switches on its next request. The base
        model is published as the last champion with its LoRA weights zeroed (an identity adapter)."""
        name = self.config.publish_as
        if not name:
            return None
        import shutil

        from studyhall.training.adapters import (
            clean_stale_staging,
            publish,
            registry_dir,
            staging_dir,
        )

        dest = Path(self.config.registry) if self.config.registry else registry_dir()
        dest = dest / name
        if adapter is None and not dest.exists():
            return None  # nothing published yet, so nothing serves it
        clean_stale_staging(dest)
        staging = staging_dir(dest)
        shutil.copytree(adapter or dest, staging)
        if adapter is None:
            _zero_lora_weights(staging)
        if not adapter_is_complete(staging):
            shutil.rmtree(staging, ignore_errors=True)
            raise StudyhallError(f"the champion {adapter} is incomplete; {dest} left as it was")
        publish(staging, dest)
        self.log(f"published {adapter or 'the base model (zeroed adapter)'} as {dest}")
        return dest

    def _record(self, ctx: IterationContext) -> dict[str, Any]:
        r = ctx.results
        cmp = r["promote"].get("comparison") or {}
        summary = {
            "collected": r["collect"].get("trajectories"),
            "new_problems": r["collect"].get("new_problems"),
            "train_rows": r["build"].get("rows"),
            "train_metrics": r["train"].get("metrics", {}),
            "candidate_accuracy": cmp.get("candidate_accuracy"),
            "champion_accuracy": cmp.get("champion_accuracy", r["evaluate"].get("champion_accuracy")),
            "p_value": cmp.get("p_value"),
            "candidate": r["train"].get("adapter"),
            "champion_before": ctx.champion_adapter,
            "seconds": {s: r[s].get("seconds") for s in STEPS[:-1]},
        }
        self.state.finish_iteration(ctx.n, r["promote"]["decision"], r["promote"]["reason"], summary)
        return {"decision": r["promote"]["decision"]}

    # schedule -----------------------------------------------------------------
    def run(self, once: bool = False, max_iterations: int | None = None, sleep: Any = time.sleep) -> None:
        """Iterations on the schedule until interrupted (or once / max_iterations)."""
        with self.locked():
            count = 0
            while True:
                if not once:
                    start = self.schedule.next_run(datetime.now().astimezone(), self._last_start_local())
                    wait = (start - datetime.now().astimezone()).total_seconds()
                    if wait > 0:
                        self.log(f"next iteration at {start:%Y-%m-%d %H:%M:%S %Z} (in {wait / 60:.1f} min)")
                        sleep(wait)
                self.run_iteration()
                count += 1
                if once or (max_iterations is not None and count >= max_iterations):
                    return

    def _last_start_local(self) -> datetime | None:
        last = self.state.last_start()
        return last.astimezone() if last else None

    def rollback(self, n: int) -> Champion:
        """Make the champion what it was after iteration n (n=0: the base model)."""
        chosen: dict[str, Any] | None = None
        for entry in self.state.champion_log():
            if entry["n"] <= n and not (entry["note"] or "").startswith("rollback"):
                chosen = entry
        if n > 0 and not any(it["n"] == n for it in self.state.iterations()):
            raise StudyhallError(f"no iteration {n}", hint="see `studyhall loop history`")
        adapter = chosen["adapter"] if chosen else None
        if adapter is not None and not adapter_is_complete(adapter):
            raise StudyhallError(f"the champion of iteration {n} ({adapter}) is missing or incomplete")
        champion = Champion(adapter=adapter, iteration=n, dev_accuracy=chosen["dev_accuracy"] if chosen else None, at=now())
        with self.locked():
            self.state.set_champion(champion, note=f"rollback to iteration {n}")
            self.publish_champion(adapter)
        return champion


def _zero_lora_weights(folder: Path) -> None:
    """Same shapes, all zeros: the adapter then adds nothing to the base model."""
    from safetensors.numpy import load_file, save_file

    weights = folder / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    save_file({k: v * 0 for k, v in tensors.items()}, str(weights))


def _brief(result: dict[str, Any]) -> str:
    keys = ("trajectories", "rows", "adapter", "decision", "candidate_accuracy", "champion_accuracy")
    parts = [f"{k}={result[k]}" for k in keys if k in result]
    return ("(" + ", ".join(parts) + ")") if parts else ""
