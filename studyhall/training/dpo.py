"""DPO: direct preference optimisation of a LoRA adapter on (correct, incorrect) solution
pairs of one question (trl's DPOTrainer). The reference policy is the base model (the
adapter switched off), so no second copy of the weights is loaded."""

from __future__ import annotations

from studyhall.training.adapters import AdapterMetadata
from studyhall.training.runs import (
    Run,
    attach_parent,
    finish,
    load_base,
    lora_config,
    progress_callback,
    quiet,
    summarize,
    trl_args,
)


def fit(run: Run) -> AdapterMetadata:
    from datasets.utils.logging import disable_progress_bar
    from trl import DPOConfig, DPOTrainer

    disable_progress_bar()
    cfg = run.config
    model, tokenizer = load_base(run)
    peft_config = None
    if run.parent is not None:
        model = attach_parent(model, run)
    else:
        peft_config = lora_config(run)
    args = trl_args(run, DPOConfig, beta=cfg.beta, loss_type=[cfg.loss_type], max_length=cfg.max_length,
                    precompute_ref_log_probs=False)
    callbacks = list(run.callbacks)
    if run.console is not None:
        callbacks.append(progress_callback(run.console, f"dpo {run.out.name}"))
    trainer = DPOTrainer(
        model=model, ref_model=None, args=args,
        train_dataset=run.dataset.select_columns(["prompt", "chosen", "rejected"]),
        processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks,
    )
    quiet(trainer)
    trainer.train(resume_from_checkpoint=str(run.resume_from) if run.resume_from else None)
    metrics = summarize(trainer.state.log_history, trainer.state.global_step, run.resumed_step)
    last = next((h for h in reversed(trainer.state.log_history) if "rewards/accuracies" in h), None)
    if last:
        metrics |= {k: last[k] for k in ("rewards/accuracies", "rewards/margins") if k in last}
    return finish(run, trainer.model, {None: "default"}, metrics, trainer.state.log_history)
