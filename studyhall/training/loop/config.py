"""loop.toml: what one iteration does and when iterations run."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from studyhall.errors import ConfigError


class CollectConfig(BaseModel):
    """Where problems come from and which graphs solve them with the champion."""

    data: str | None = Field(None, description="GSM8K folder or a JSONL file; default: GSM8K found locally.")
    split: str = Field("train", description="Split the pool (and the dev set) is drawn from.")
    problems: int = Field(200, ge=1, description="Problems collected per iteration.")
    graphs: list[str] = Field(default_factory=lambda: ["vote"], description="Graphs run on each problem.")
    graph_options: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"vote": {"k": 4, "first": 2}})
    teach: bool = Field(True, description="Also run the teach graph on the wrong answers (LLM2LLM).")
    teach_per_problem: int = Field(1, ge=1, description="New problems the teacher writes per wrong answer.")
    teach_max: int = Field(50, ge=0, description="Most wrong answers taught per iteration.")
    concurrency: int = Field(16, ge=1)
    max_tokens: int | None = Field(None, ge=1)


class DataConfig(BaseModel):
    method: Literal["sft", "dpo", "grpo"] = Field("sft", description="Which dataset the trainer gets.")
    replay: float = Field(0.25, ge=0, le=1, description="Share of old trajectories mixed into the new ones.")
    masked_thought: float = Field(0.0, ge=0, lt=1, description="SFT: fraction of reasoning tokens masked.")


class TrainConfig(BaseModel):
    options: dict[str, Any] = Field(default_factory=dict, description="Passed to the method's training config.")


class EvalConfig(BaseModel):
    dev_size: int = Field(100, ge=1, description="Held-out problems from the split, never trained on.")
    dev_seed: int = 1234
    graph: str = "direct"
    graph_options: dict[str, Any] = Field(default_factory=dict)
    concurrency: int = Field(16, ge=1)
    max_tokens: int | None = Field(None, ge=1)
    checker: Literal["strict", "flexible", "math_verify"] = Field(
        "flexible", description="The eval checker whose verdicts decide promotion (the same for both).")


class PromoteConfig(BaseModel):
    margin: float = Field(0.0, ge=0, le=1, description="Accuracy gain the candidate needs over the champion.")
    alpha: float = Field(0.1, gt=0, le=1, description="One-sided p-value bound of the paired sign (McNemar) test.")


class LoopConfig(BaseModel):
    version: int = 1
    state_dir: Path = Field(Path("loop-state"), description="SQLite state, adapters, runs, the lock.")
    model: str | None = Field(None, description="Base model spec; default: the configured model.")
    every: str | None = Field("6h", description="Interval between iteration starts: 30m, 6h, 1d ...")
    cron: str | None = Field(None, description="A cron expression instead of `every`.")
    steps: str | None = Field(None, description="module:factory of custom step implementations.")
    publish_as: str | None = Field("champion", description="Registry name the champion is also published under "
                                   "(a server or chat bound to it picks up each promotion); empty: do not publish.")
    registry: Path | None = Field(None, description="Adapter registry folder; default: settings.home/adapters.")
    seed: int = 0
    collect: CollectConfig = Field(default_factory=CollectConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    promote: PromoteConfig = Field(default_factory=PromoteConfig)

    model_config = {"extra": "forbid"}

    @model_validator(mode="after")
    def _schedule_is_valid(self) -> LoopConfig:
        from studyhall.training.loop.schedule import Schedule

        Schedule.from_config(self.every, self.cron)  # raises ValueError with the reason
        return self


def load_loop_config(path: str | Path, **overrides: Any) -> LoopConfig:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text()) if path.exists() else {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if not path.exists():
        raise ConfigError(f"no loop config at {path}", hint="see docs/loop.md for an example loop.toml")
    data.update({k: v for k, v in overrides.items() if v is not None})
    for key in ("state_dir", "registry"):  # relative to the config file
        if data.get(key) and not Path(data[key]).expanduser().is_absolute():
            data[key] = str((path.parent / data[key]).resolve())
    try:
        return LoopConfig.model_validate(data)
    except ValidationError as exc:
        lines = [f"{'.'.join(map(str, e['loc'])) or 'loop'}: {e['msg']} (got {e.get('input')!r})" for e in exc.errors()]
        raise ConfigError(f"invalid loop config {path}:\n  " + "\n  ".join(lines)) from None
