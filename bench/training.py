"""Training cost on this CPU, measured side by side in one run: SFT tokens/s with LoRA (float32
and bfloat16 weights) and with full fine-tuning, their peak memory, and GRPO seconds per step
(LoRA).

Each mode runs in its own subprocess (so peak RSS is that mode's alone): it loads the
model, builds the SFT rows from GSM8K train problems turned into trajectories (worked
solution + ``Answer: N``, through ``training.datasets`` like real data), trains a few
steps, and reports JSON. The parent prints the table and the ratios. The machine may be
shared: compare the rows of one run, not numbers across runs.

    python bench/training.py [--model SPEC] [--steps 3] [--grpo-steps 2] [--threads N]
                             [--batch-size 2] [--max-length 256] [--completion 64]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def trajectories(n: int):
    """GSM8K train problems as direct-graph trajectories with the gold worked solution."""
    from studyhall.agents import student
    from studyhall.evals.datasets import load_gsm8k
    from studyhall.records import AgentStep, ChatTurn, Trajectory

    out = []
    for p in load_gsm8k(None, "train").problems[:n]:
        step = AgentStep(role="student", node="student", completion=f"{p.solution}\nAnswer: {p.answer}", prompt=[
            ChatTurn(role="system", content=student.SYSTEM), ChatTurn(role="user", content=student.user_prompt(p.question))])
        out.append(Trajectory(question=p.question, graph="direct", model="bench", steps=[step], gold_answer=p.answer))
    return out


def child_sft(args: argparse.Namespace, full: bool, bf16: bool = False) -> dict:
    import torch
    from datasets.utils.logging import disable_progress_bar
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import SFTConfig, SFTTrainer

    from studyhall.serving.loader import resolve_path
    from studyhall.training.config import LoraOptions
    from studyhall.training.datasets import sft_dataset

    disable_progress_bar()
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    path = resolve_path(args.model)
    rows = args.steps * args.batch_size
    dataset, _ = sft_dataset(trajectories(rows))
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16 if bf16 else torch.float32)
    loaded = rss_mib()
    peft_config = None
    if not full:
        from peft import LoraConfig

        o = LoraOptions()
        peft_config = LoraConfig(r=o.r, lora_alpha=o.alpha, lora_dropout=o.dropout, target_modules=o.target_modules,
                                 task_type="CAUSAL_LM")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SFTConfig(output_dir=tmp, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
                        learning_rate=1e-5 if full else 2e-4, logging_steps=1, save_strategy="no", report_to=[],
                        max_length=args.max_length, activation_checkpointing=False, use_cpu=True, disable_tqdm=True, bf16=bf16,
                        dataloader_pin_memory=False, completion_only_loss=True)
        trainer = SFTTrainer(model=model, args=cfg, train_dataset=dataset.select_columns(["prompt", "completion"]),
                             processing_class=tokenizer, peft_config=peft_config)
        trainer.remove_callback(PrinterCallback)
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    logs = [h for h in trainer.state.log_history if "num_tokens" in h]
    tokens = logs[-1]["num_tokens"] if logs else 0
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds, "s_per_step": seconds / args.steps,
            "rss_loaded_mib": loaded, "peak_rss_mib": peak_rss_mib(), "trainable": trainable}


def child_grpo(args: argparse.Namespace) -> dict:
    from studyhall.config import load_settings
    from studyhall.training.config import make_config
    from studyhall.training.runs import train

    settings = load_settings(model=args.model, home=tempfile.mkdtemp(prefix="bench-home-"))
    gens = 4
    cfg = make_config("grpo", {"model": args.model, "max_steps": args.grpo_steps, "batch_size": gens,
                               "num_generations": gens, "max_completion_length": args.completion,
                               "threads": args.threads, "save_steps": 1000})
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        meta = train("grpo", trajectories(args.grpo_steps), Path(tmp) / "grpo", config=cfg, settings=settings)
        seconds = time.perf_counter() - started
        log = [json.loads(line) for line in (Path(tmp) / "grpo" / "training-log.jsonl").read_text().splitlines()]
    step_times = [h["step_time"] for h in log if "step_time" in h]
    return {"seconds": seconds, "s_per_step": sum(step_times) / len(step_times) if step_times else None,
            "completion_tokens": args.completion, "generations": gens,
            "reward": meta.metrics.get("reward"), "peak_rss_mib": peak_rss_mib()}


def run_child(mode: str, argv: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", mode, *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="packaged:qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--steps", type=int, default=3, help="SFT optimizer steps per mode")
    ap.add_argument("--grpo-steps", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--completion", type=int, default=64, help="GRPO max completion tokens")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--modes", default="sft-lora,sft-lora-bf16,sft-full,grpo-lora")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        result = (child_grpo(args) if args.child == "grpo-lora"
                  else child_sft(args, full=args.child == "sft-full", bf16=args.child.endswith("bf16")))
        print(json.dumps(result))
        return
    argv, skip = [], False  # the children get every option but --modes
    for a in sys.argv[1:]:
        if skip or a.startswith("--modes="):
            skip = False
            continue
        skip = a == "--modes"
        if not skip:
            argv.append(a)
    modes = args.modes.split(",")
    print(f"model {args.model}  threads {args.threads or os.cpu_count()}  sft steps {args.steps} x batch "
          f"{args.batch_size} (<= {args.max_length} tokens)  grpo steps {args.grpo_steps} x 4 generations x "
          f"{args.completion} tokens   load avg {os.getloadavg()[0]:.1f}", flush=True)
    results = {}
    for mode in modes:
        results[mode] = r = run_child(mode, argv)
        if mode.startswith("sft"):
            print(f"{mode:13s}  {r['tokens_per_s']:7.1f} tokens/s  {r['s_per_step']:6.1f} s/step  "
                  f"peak RSS {r['peak_rss_mib']:7.0f} MiB (model loaded {r['rss_loaded_mib']:.0f} MiB, "
                  f"training +{r['peak_rss_mib'] - r['rss_loaded_mib']:.0f} MiB)  trainable {r['trainable'] / 1e6:.1f}M",
                  flush=True)
        else:
            print(f"{mode:13s}  {r['s_per_step']:7.1f} s/step (4 x {r['completion_tokens']}-token generations + update)"
                  f"  peak RSS {r['peak_rss_mib']:7.0f} MiB", flush=True)
    if "sft-lora" in results and "sft-full" in results:
        lora, full = results["sft-lora"], results["sft-full"]
        print(f"LoRA vs full fine-tuning: peak memory {full['peak_rss_mib'] / lora['peak_rss_mib']:.2f}x less "
              f"(training overhead {(full['peak_rss_mib'] - full['rss_loaded_mib']) / max(1.0, lora['peak_rss_mib'] - lora['rss_loaded_mib']):.1f}x less), "
              f"tokens/s {lora['tokens_per_s'] / full['tokens_per_s']:.2f}x, "
              f"trainable parameters {full['trainable'] / lora['trainable']:.0f}x fewer")
    if "sft-lora" in results and "sft-lora-bf16" in results:
        print(f"LoRA bfloat16 vs float32 weights: tokens/s "
              f"{results['sft-lora-bf16']['tokens_per_s'] / results['sft-lora']['tokens_per_s']:.2f}x, peak memory "
              f"{results['sft-lora']['peak_rss_mib'] / results['sft-lora-bf16']['peak_rss_mib']:.2f}x less")


if __name__ == "__main__":
    main()
