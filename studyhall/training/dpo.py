"""DPO: direct preference optimisation of a LoRA adapter on (correct, incorrect) solution
pairs of one question (trl's DPOTrainer). The reference policy is the base model (the
adapter switched off), so no second copy of the weights is loaded."""

from __future__ import annotations

from studyhall.training.adapters import AdapterMetadata
from studyhall.training.runs import (
    Run,
    base_and_peft,
    finish,
    train_and_summarize,
    trainer_callbacks,
    trl_args,
)


def fit(run: Run) -> AdapterMetadata:
    from datasets.utils.logging import disable_progress_bar
    from trl import DPOConfig, DPOTrainer

    disable_progress_bar()
    cfg = run.config
    model, tokenizer, peft_config = base_and_peft(run)
    args = trl_args(run, DPOConfig, beta=cfg.beta, loss_type=[cfg.loss_type], max_length=cfg.max_length,
                    precompute_ref_log_probs=False)
    callbacks = trainer_callbacks(run, "dpo")
    trainer = DPOTrainer(
        model=model, ref_model=None, args=args,
        train_dataset=run.dataset.select_columns(["prompt", "chosen", "rejected"]),
        processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks,
    )
    metrics = train_and_summarize(trainer, run)
    last = next((h for h in reversed(trainer.state.log_history) if "rewards/accuracies" in h), None)
    if last:
        metrics |= {k: last[k] for k in ("rewards/accuracies", "rewards/margins") if k in last}
    return finish(run, trainer.model, {None: "default"}, metrics, trainer.state.log_history)
