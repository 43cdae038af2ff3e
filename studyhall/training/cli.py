"""``studyhall train sft|dpo|grpo|cory --data TRAJ.jsonl --out NAME_OR_PATH``, and
``studyhall train list``. Rerunning a killed command resumes from its last checkpoint.

Options that every method shares are flags; any config field can also be set with
``-o key=value`` (dotted for nested fields: ``-o lora.r=8 -o rewards.format=0``) or from a
JSON/TOML file with ``--config``. Nothing heavy is imported until a command runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(help="Train LoRA adapters from trajectories: sft, dpo, grpo, cory.", no_args_is_help=True)

Data = Annotated[Path, typer.Option("--data", "-d", help="Trajectories JSONL (TrajectoryStore.export_jsonl).")]
Out = Annotated[str, typer.Option("--out", help="Adapter folder: a path (adapters/NAME) or a registry NAME.")]
Model = Annotated[str | None, typer.Option("--model", "-m", help="Base model spec; default: the configured model.")]
Parent = Annotated[str | None, typer.Option("--parent", help="Continue training this adapter (path or NAME).")]
Steps = Annotated[int | None, typer.Option("--max-steps", help="Optimizer steps (-1: use --epochs).")]
Epochs = Annotated[float | None, typer.Option("--epochs", help="Passes over the data when --max-steps is -1.")]
LR = Annotated[float | None, typer.Option("--lr", help="Peak learning rate.")]
Batch = Annotated[int | None, typer.Option("--batch-size", help="Rows per forward pass.")]
Accum = Annotated[int | None, typer.Option("--grad-accum", help="Forward passes per optimizer step.")]
Rank = Annotated[int | None, typer.Option("--lora-r", help="LoRA rank (8, 16, 32, 64 ...).")]
MaxLen = Annotated[int | None, typer.Option("--max-length", help="Longest prompt + completion in tokens.")]
SaveSteps = Annotated[int | None, typer.Option("--save-steps", help="Checkpoint every N steps.")]
Threads = Annotated[int | None, typer.Option("--threads", help="torch threads.")]
Seed = Annotated[int | None, typer.Option("--seed")]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="JSON or TOML file of config fields.")]
Opts = Annotated[list[str] | None, typer.Option("--option", "-o", help="Any config field KEY=VALUE; repeatable.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace a finished adapter or foreign checkpoints.")]
SkipBad = Annotated[bool, typer.Option("--skip-bad-rows", help="Skip (and list) bad rows instead of stopping.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the adapter metadata as JSON.")]
Gens = Annotated[int | None, typer.Option("--num-generations", help="Samples per prompt.")]
CompLen = Annotated[int | None, typer.Option("--max-completion-length", help="Token budget per sample.")]
Temp = Annotated[float | None, typer.Option("--temperature", help="Sampling temperature.")]


def _file_options(path: Path | None) -> dict[str, Any]:
    from studyhall.errors import InputError

    if path is None:
        return {}
    try:
        text = path.read_text()
        data = __import__("tomllib").loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the config file {path}: {exc}") from None

    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out |= flat(v, f"{prefix}{k}.")
            else:
                out[f"{prefix}{k}"] = v
        return out

    return flat(data)


def _train(method: str, data: Path, out: str, flags: dict[str, Any], config_file: Path | None,
           options: list[str] | None, overwrite: bool, as_json: bool, model: str | None, threads: int | None) -> None:
    from rich.console import Console

    from studyhall.cli import parse_options
    from studyhall.config import load_settings
    from studyhall.training.config import make_config
    from studyhall.training.runs import train

    overrides = _file_options(config_file) | {k: v for k, v in flags.items() if v is not None} | parse_options(options)
    config = make_config(method, overrides)
    settings = load_settings(model=model, threads=threads)
    console = Console(highlight=False, stderr=as_json)
    console.print(f"[bold]train {method}[/] on {config.model or settings.model} -> {out}")
    meta = train(method, data, out, config=config, settings=settings, overwrite=overwrite, console=console)
    if as_json:
        print(meta.model_dump_json(indent=2))
        return
    m = meta.metrics
    shown = {k: v for k, v in m.items() if k not in ("resumed_from_step",) and v is not None}
    console.print("metrics: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items()))
    from studyhall.training.adapters import output_dir

    console.print(f"[green]adapter saved[/] {output_dir(out, settings)} ({meta.method}, {meta.data_size} rows)")


@app.command("sft")
def sft(
    data: Data, out: Out, model: Model = None, parent: Parent = None, max_steps: Steps = None, epochs: Epochs = None,
    lr: LR = None, batch_size: Batch = None, grad_accum: Accum = None, lora_r: Rank = None, max_length: MaxLen = None,
    save_steps: SaveSteps = None, threads: Threads = None, seed: Seed = None,
    masked_thought: Annotated[float | None, typer.Option(help="Share of reasoning tokens masked in the input (0.2-0.4).")] = None,
    skip_bad_rows: SkipBad = False, config: ConfigFile = None, option: Opts = None, overwrite: Overwrite = False,
    as_json: AsJson = False,
) -> None:
    """Supervised fine-tuning on correct solutions and the teacher's checked problems."""
    _train("sft", data, out, _flags(locals()), config, option, overwrite, as_json, model, threads)


@app.command("dpo")
def dpo(
    data: Data, out: Out, model: Model = None, parent: Parent = None, max_steps: Steps = None, epochs: Epochs = None,
    lr: LR = None, batch_size: Batch = None, grad_accum: Accum = None, lora_r: Rank = None, max_length: MaxLen = None,
    save_steps: SaveSteps = None, threads: Threads = None, seed: Seed = None,
    beta: Annotated[float | None, typer.Option(help="DPO beta (strength of the pull to the base policy).")] = None,
    skip_bad_rows: SkipBad = False, config: ConfigFile = None, option: Opts = None, overwrite: Overwrite = False,
    as_json: AsJson = False,
) -> None:
    """Preference optimisation on (correct, incorrect) solutions of the same question."""
    _train("dpo", data, out, _flags(locals()), config, option, overwrite, as_json, model, threads)


@app.command("grpo")
def grpo(
    data: Data, out: Out, model: Model = None, parent: Parent = None, max_steps: Steps = None, epochs: Epochs = None,
    lr: LR = None, batch_size: Batch = None, grad_accum: Accum = None, lora_r: Rank = None, max_length: MaxLen = None,
    save_steps: SaveSteps = None, threads: Threads = None, seed: Seed = None, num_generations: Gens = None,
    max_completion_length: CompLen = None, temperature: Temp = None,
    beta: Annotated[float | None, typer.Option(help="KL penalty to the base policy (0 = none).")] = None,
    use_vllm: Annotated[bool | None, typer.Option("--use-vllm/--no-vllm", help="Generate with vLLM (GPU).")] = None,
    vllm_mode: Annotated[str | None, typer.Option(help="colocate, or server (`trl vllm-serve`).")] = None,
    vllm_server: Annotated[str | None, typer.Option(help="server mode: the vLLM server URL.")] = None,
    skip_bad_rows: SkipBad = False, config: ConfigFile = None, option: Opts = None, overwrite: Overwrite = False,
    as_json: AsJson = False,
) -> None:
    """Group relative policy optimisation with correctness and format rewards."""
    _train("grpo", data, out, _flags(locals()), config, option, overwrite, as_json, model, threads)


@app.command("cory")
def cory(
    data: Data, out: Out, model: Model = None, parent: Parent = None, max_steps: Steps = None, epochs: Epochs = None,
    lr: LR = None, batch_size: Batch = None, lora_r: Rank = None, max_length: MaxLen = None,
    save_steps: SaveSteps = None, threads: Threads = None, seed: Seed = None, num_generations: Gens = None,
    max_completion_length: CompLen = None, temperature: Temp = None,
    swap_every: Annotated[int | None, typer.Option(help="Steps between pioneer/observer role swaps.")] = None,
    skip_bad_rows: SkipBad = False, config: ConfigFile = None, option: Opts = None, overwrite: Overwrite = False,
    as_json: AsJson = False,
) -> None:
    """CORY: a pioneer and an observer adapter trained on their shared reward, swapping roles."""
    _train("cory", data, out, _flags(locals()), config, option, overwrite, as_json, model, threads)


_FLAG_FIELDS = {
    "model": "model", "parent": "parent", "max_steps": "max_steps", "epochs": "num_epochs", "lr": "learning_rate",
    "batch_size": "batch_size", "grad_accum": "grad_accum", "lora_r": "lora.r", "max_length": "max_length",
    "save_steps": "save_steps", "threads": "threads", "seed": "seed", "masked_thought": "masked_thought",
    "beta": "beta", "num_generations": "num_generations", "max_completion_length": "max_completion_length",
    "temperature": "temperature", "swap_every": "swap_every", "use_vllm": "use_vllm", "vllm_mode": "vllm_mode",
    "vllm_server": "vllm_server_base_url",
}


def _flags(values: dict[str, Any]) -> dict[str, Any]:
    flags = {field: values[name] for name, field in _FLAG_FIELDS.items() if name in values}
    if values.get("skip_bad_rows"):
        flags["data.skip_bad_rows"] = True
    if flags.get("lora.r") is not None:
        flags["lora.alpha"] = 2 * flags["lora.r"]
    return flags


@app.command("list")
def list_cmd(as_json: AsJson = False) -> None:
    """Registered adapters (settings.home/adapters) with method, base model and metrics."""
    from rich.console import Console
    from rich.table import Table

    from studyhall.training.adapters import list_adapters, registry_dir

    items = list_adapters()
    if as_json:
        print(json.dumps([{"name": n, **(m.model_dump(mode="json") if m else {})} for n, m in items], indent=2))
        return
    table = Table("name", "method", "base", "rows", "steps", "created")
    for name, meta in items:
        if meta is None:
            table.add_row(name, "-", "-", "-", "-", "-")
        else:
            table.add_row(name, meta.method, meta.base.spec or meta.base.path, str(meta.data_size),
                          str(meta.metrics.get("steps", "-")), f"{meta.created:%Y-%m-%d %H:%M}")
    console = Console(highlight=False)
    console.print(table)
    console.print(f"[dim]registry: {registry_dir()}")
