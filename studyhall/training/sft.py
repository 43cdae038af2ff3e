"""SFT: supervised fine-tuning of a LoRA adapter on correct solutions (trl's SFTTrainer,
loss on the completion only), with optional Masked Thought.

Masked Thought (Chen et al., "Masked Thought: Simply Masking Partial Reasoning Steps Can
Improve Mathematical Reasoning Learning of Language Models"): during training, a random
share of the reasoning tokens in the *input* is replaced by a mask token while the labels
stay the original tokens, so the model learns to reason past small gaps and errors — a
cheap regulariser against overfitting a few solutions. Implemented as a collator wrapper.
"""

from __future__ import annotations

from typing import Any

from studyhall.training.adapters import AdapterMetadata
from studyhall.training.runs import (
    Run,
    base_and_peft,
    finish,
    train_and_summarize,
    trainer_callbacks,
    trl_args,
)


class MaskedThoughtCollator:
    """Wraps a collator whose batches hold ``input_ids`` and ``labels`` (-100 = prompt or
    padding): each completion token of the input is replaced by ``mask_token_id`` with
    probability ``ratio``. Labels, prompt tokens and padding are left as they are."""

    def __init__(self, inner: Any, ratio: float, mask_token_id: int, seed: int = 0) -> None:
        import torch

        if not 0 <= ratio < 1:
            raise ValueError("the masked thought ratio must be in [0, 1)")
        self.inner = inner
        self.ratio = ratio
        self.mask_token_id = int(mask_token_id)
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        batch = self.inner(examples)
        if self.ratio <= 0:
            return batch
        response = batch["labels"] != -100
        draw = torch.rand(batch["input_ids"].shape, generator=self.generator)
        batch["input_ids"] = batch["input_ids"].masked_fill(response & (draw < self.ratio), self.mask_token_id)
        return batch


def fit(run: Run) -> AdapterMetadata:
    from datasets.utils.logging import disable_progress_bar
    from trl import SFTConfig, SFTTrainer

    disable_progress_bar()
    cfg = run.config
    model, tokenizer, peft_config = base_and_peft(run)
    args = trl_args(run, SFTConfig, max_length=cfg.max_length, completion_only_loss=True, packing=False)
    callbacks = trainer_callbacks(run, "sft")
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=run.dataset.select_columns(["prompt", "completion"]),
        processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks,
    )
    if cfg.masked_thought > 0:
        token = cfg.mask_token or tokenizer.pad_token
        mask_id = tokenizer.convert_tokens_to_ids(token)
        trainer.data_collator = MaskedThoughtCollator(trainer.data_collator, cfg.masked_thought, mask_id, cfg.seed)
    metrics = train_and_summarize(trainer, run)
    return finish(run, trainer.model, {None: "default"}, metrics, trainer.state.log_history)
