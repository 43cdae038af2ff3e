"""Typed training configs, one per method, every field with a default and a reason.

Groups (as in trl's configs): the base model and LoRA; optimisation (steps, batch,
learning rate); data (how trajectories become rows); method-specific knobs (masked
thought for SFT, beta for DPO, generation and rewards for GRPO, role swaps for CORY);
checkpoints and logging. A run's config is stored in its adapter's metadata, so a
result can be traced to exactly what produced it.

trl no longer ships a PPOTrainer: the PPO-family update here is GRPO (clipped policy
gradient with group-relative advantages, no value model), and CORY is built on the same
kind of update (see ``training.cory``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CONFIG_VERSION = 1
# LoRA ranks vLLM's punica kernels accept, so every adapter can be served by vLLM as is.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


class LoraOptions(BaseModel):
    """LoRA on the attention and MLP projections: small, servable by vLLM (no modules_to_save)."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, description="Rank; one of vLLM's supported ranks (1, 8, 16, 32, 64, ...).")
    alpha: int = Field(32, description="Scaling numerator: the update is scaled by alpha / r.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input during training.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt (e.g. [q_proj, v_proj]), or all-linear."
    )

    @field_validator("r")
    @classmethod
    def _servable_rank(cls, value: int) -> int:
        if value not in VLLM_LORA_RANKS:
            raise ValueError(f"r={value}: vLLM serves LoRA ranks {VLLM_LORA_RANKS}")
        return value


class DataOptions(BaseModel):
    """How trajectories become training rows (see ``training.datasets``)."""

    model_config = ConfigDict(extra="forbid")

    prompt: Literal["canonical", "recorded"] = Field(
        "canonical",
        description="canonical: the student's system + user prompt for the question (what the graphs "
        "send at inference); recorded: the exact prompt each agent step saw (with its examples, facts, feedback).",
    )
    max_per_question: int = Field(4, ge=1, description="Most SFT examples (or DPO pairs) kept per question.")
    teacher_problems: bool = Field(True, description="Use the teach graph's checked new problems (LLM2LLM).")
    skip_bad_rows: bool = Field(
        False, description="Skip malformed rows and questions without a gold answer (listed in the report) "
        "instead of stopping at the first one."
    )
    max_rows: int | None = Field(None, ge=1, description="Cap on training rows (after dedup), for small runs.")


class TrainConfig(BaseModel):
    """What every method shares. Defaults suit the 0.5B default model on a CPU: LoRA,
    float32, a few hundred steps; small tests override steps, lengths and rank."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    version: int = CONFIG_VERSION
    method: str = ""
    # Base model and adapter
    model: str | None = Field(None, description="Base model spec; None = settings.model.")
    parent: str | None = Field(None, description="An adapter to continue training (its LoRA shape is kept).")
    lora: LoraOptions = Field(default_factory=LoraOptions)
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="Training dtype. float32 on CPU (bf16 autocast gains little for LoRA there)."
    )
    # Optimisation
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate (LoRA tolerates higher rates than full fine-tuning).")
    max_steps: int = Field(-1, description="Optimizer steps; -1 = run num_epochs over the data.")
    num_epochs: float = Field(1.0, gt=0, description="Passes over the data when max_steps is -1.")
    batch_size: int = Field(2, ge=1, description="Rows per device per forward pass.")
    grad_accum: int = Field(4, ge=1, description="Forward passes per optimizer step.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of steps spent warming the learning rate up.")
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    max_length: int = Field(1024, ge=16, description="Longest prompt + completion in tokens; longer rows are truncated.")
    seed: int = Field(0, description="Seeds LoRA init, shuffling, sampling and masking.")
    threads: int | None = Field(None, ge=1, description="torch threads; None = settings.threads or all cores.")
    # Data
    data: DataOptions = Field(default_factory=DataOptions)
    # Checkpoints and logging
    save_steps: int = Field(50, ge=1, description="Checkpoint every N steps into OUT/checkpoints (resume point).")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept (the newest; two survive a kill mid-save).")
    keep_checkpoints: bool = Field(False, description="Keep OUT/checkpoints after a finished run.")
    logging_steps: int = Field(1, ge=1)

    def public(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class SFTConfig(TrainConfig):
    """Supervised fine-tuning on correct solutions (rejection sampling / STaR) and the
    teacher's checked problems (LLM2LLM); loss on the completion only."""

    method: Literal["sft"] = "sft"
    masked_thought: float = Field(
        0.0, ge=0, lt=1,
        description="Masked Thought: share of reasoning (completion) tokens replaced by a mask token in the "
        "input, labels kept. 0 = off; the paper found 0.2-0.4 helpful on GSM8K-style data.",
    )
    mask_token: str | None = Field(None, description="Token used for masking; None = the tokenizer's pad token.")


class DPOConfig(TrainConfig):
    """Direct preference optimisation on (correct, incorrect) solutions of one question."""

    method: Literal["dpo"] = "dpo"
    learning_rate: float = Field(5e-5, gt=0, description="Peak learning rate (DPO wants lower rates than SFT).")
    beta: float = Field(0.1, gt=0, description="Strength of the implicit KL to the base (reference) policy.")
    loss_type: str = Field("sigmoid", description="trl DPO loss: sigmoid (the paper's), ipo, hinge, ...")


class RewardOptions(BaseModel):
    """Weights of the reward functions; each is logged on its own (rewards/NAME/mean)."""

    model_config = ConfigDict(extra="forbid")

    correctness: float = Field(1.0, ge=0, description="1 when the final answer matches the gold answer.")
    format: float = Field(0.2, ge=0, description="1 when the completion ends with an explicit 'Answer: N'.")
    novelty: float = Field(0.0, ge=0, description="Memory novelty bonus in [0,1]; 0 = off (needs memory).")


class GRPOConfig(TrainConfig):
    """Group relative policy optimisation: sample a group of completions per prompt, reward
    them, and push up those above the group mean (trl's GRPOTrainer)."""

    method: Literal["grpo"] = "grpo"
    learning_rate: float = Field(2e-5, gt=0, description="Peak learning rate (RL wants small steps).")
    batch_size: int = Field(4, ge=1, description="Completions per device per step (a multiple of num_generations).")
    grad_accum: int = Field(1, ge=1)
    num_generations: int = Field(4, ge=2, description="Completions sampled per prompt (the group).")
    max_completion_length: int = Field(256, ge=1, description="Token budget per sampled completion.")
    temperature: float = Field(0.9, gt=0, description="Sampling temperature for the group.")
    top_p: float = Field(1.0, gt=0, le=1)
    beta: float = Field(0.0, ge=0, description="KL penalty to the base policy; 0 = no reference model (faster).")
    epsilon: float = Field(0.2, gt=0, description="PPO-style clipping of the probability ratio.")
    num_iterations: int = Field(1, ge=1, description="Updates per generated batch (mu in the paper).")
    loss_type: str = Field("dapo", description="trl GRPO loss normalisation: grpo, dr_grpo, dapo, bnpo ...")
    rewards: RewardOptions = Field(default_factory=RewardOptions)
    use_vllm: bool = Field(False, description="Generate with vLLM (GPU): colocated in-process or a trl vllm-serve server.")
    vllm_mode: Literal["colocate", "server"] = Field("colocate", description="colocate: share the GPU in-process; server: `trl vllm-serve`.")
    vllm_server_base_url: str | None = Field(None, description="server mode: e.g. http://127.0.0.1:8000.")
    vllm_gpu_memory_utilization: float = Field(0.3, gt=0, le=1, description="colocate mode: GPU share for vLLM.")

    @model_validator(mode="after")
    def _whole_groups(self) -> GRPOConfig:
        if (self.batch_size * self.grad_accum) % self.num_generations:
            raise ValueError(f"batch_size * grad_accum ({self.batch_size} * {self.grad_accum}) must be a multiple "
                             f"of num_generations ({self.num_generations}): each step holds whole groups")
        return self


class CoryConfig(TrainConfig):
    """CORY: two LoRA adapters on one base, a pioneer and an observer, trained together on
    their summed reward, swapping roles every ``swap_every`` steps (see ``training.cory``)."""

    method: Literal["cory"] = "cory"
    learning_rate: float = Field(2e-5, gt=0)
    batch_size: int = Field(2, ge=1, description="Questions per step.")
    grad_accum: int = Field(1, ge=1)
    num_generations: int = Field(2, ge=1, description="Pioneer samples per question (each gets one observer reply).")
    max_completion_length: int = Field(256, ge=1)
    temperature: float = Field(0.9, gt=0)
    swap_every: int = Field(2, ge=1, description="Steps between role swaps (the paper swaps periodically).")
    beta: float = Field(0.0, ge=0, description="KL penalty to the base policy per adapter; 0 = off.")
    rewards: RewardOptions = Field(default_factory=lambda: RewardOptions(format=0.0))


CONFIGS: dict[str, type[TrainConfig]] = {"sft": SFTConfig, "dpo": DPOConfig, "grpo": GRPOConfig, "cory": CoryConfig}


def make_config(method: str, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """A config for ``method`` with dotted overrides ({"lora.r": 8, "max_steps": 4})."""
    from pydantic import ValidationError

    from studyhall.errors import ConfigError, InputError

    if method not in CONFIGS:
        raise InputError(f"unknown training method {method!r}", hint="methods: " + ", ".join(CONFIGS))
    nested: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        *parents, leaf = key.split(".")
        node = nested
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    try:
        return CONFIGS[method].model_validate(nested)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                lines.append(f"unknown option {field!r}")
            elif not field:  # a rule across fields
                lines.append(err["msg"].removeprefix("Value error, "))
            else:
                lines.append(f"{field} = {err.get('input')!r}: {err['msg']}")
        raise ConfigError(f"invalid {method} config:\n  " + "\n  ".join(lines),
                          hint=f"see docs/training.md for the {method} options") from None
