"""GRPO: group relative policy optimisation of a LoRA adapter (trl's GRPOTrainer) — the
PPO-family update here, since trl no longer ships a PPOTrainer. For each prompt a group of
``num_generations`` completions is sampled and scored by the reward functions
(correctness, format, optionally memory novelty — each logged as ``rewards/NAME/mean``);
completions above their group's mean are pushed up, with PPO-style ratio clipping.

Generation: on CPU, the training model itself (transformers ``generate``). On GPU,
``use_vllm=True`` generates with vLLM, either colocated in the training process
(``vllm_mode="colocate"``) or on a server started with ``trl vllm-serve --model BASE``
(``vllm_mode="server"``, ``vllm_server_base_url``); trl syncs the LoRA-merged weights to it.
"""

from __future__ import annotations

import importlib.util

from studyhall.errors import ConfigError
from studyhall.training.adapters import AdapterMetadata
from studyhall.training.rewards import reward_functions
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
    from trl import GRPOConfig, GRPOTrainer

    disable_progress_bar()
    cfg = run.config
    if cfg.use_vllm and importlib.util.find_spec("vllm") is None:
        raise ConfigError("use_vllm is set but vLLM is not installed",
                          hint="on a CUDA machine: pip install '.[gpu]'; on CPU leave use_vllm off")
    funcs, weights = reward_functions(cfg.rewards, run.novelty)
    funcs += run.extra_rewards
    weights += [1.0] * len(run.extra_rewards)
    model, tokenizer, peft_config = base_and_peft(run)
    vllm = {}
    if cfg.use_vllm:
        vllm = {"use_vllm": True, "vllm_mode": cfg.vllm_mode,
                "vllm_gpu_memory_utilization": cfg.vllm_gpu_memory_utilization}
        if cfg.vllm_server_base_url:
            vllm["vllm_server_base_url"] = cfg.vllm_server_base_url
    args = trl_args(
        run, GRPOConfig, num_generations=cfg.num_generations, max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature, top_p=cfg.top_p, beta=cfg.beta, epsilon=cfg.epsilon,
        num_iterations=cfg.num_iterations, loss_type=cfg.loss_type, reward_weights=weights, log_completions=False,
        **vllm,
    )
    callbacks = trainer_callbacks(run, "grpo")
    trainer = GRPOTrainer(
        model=model, reward_funcs=funcs, args=args,
        train_dataset=run.dataset.select_columns(["prompt", "answer"]),
        processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks,
    )
    metrics = train_and_summarize(trainer, run)
    return finish(run, trainer.model, {None: "default"}, metrics, trainer.state.log_history)
