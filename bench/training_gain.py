"""Does training help? The whole loop once, measured side by side: sample trajectories on
GSM8K train problems, train an adapter on them, and compare GSM8K test accuracy of the base
model and the adapter (same graph, same problems, greedy), in one run.

    python bench/training_gain.py [--model SPEC] [--method sft|dpo|grpo] [--train 200]
                                  [--test 200] [--graph vote] [--k 4] [--steps 100] [--out DIR]

The default budget takes hours on a CPU (the README's measurement); ``--method grpo --train 2
--test 2 --steps 1 --max-tokens 48 --model packaged:smollm2-135m-instruct`` checks the
pipeline in minutes (SFT needs some correct samples, which SmolLM2 rarely gives).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


async def accuracy(model, problems, graph: str, max_tokens: int, concurrency: int) -> tuple[float, float, list]:
    from studyhall.api import asolve_many

    items = [{"question": p.question, "gold": p.answer} for p in problems]
    started = time.perf_counter()
    trajs = await asolve_many(items, graph=graph, model=model, concurrency=concurrency, record=False,
                              max_tokens=max_tokens)
    wall = time.perf_counter() - started
    return sum(bool(t.correct) for t in trajs) / len(trajs), wall, trajs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="packaged:qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--method", default="sft", choices=["sft", "dpo", "grpo"])
    ap.add_argument("--train", type=int, default=200, help="GSM8K train problems to sample trajectories on")
    ap.add_argument("--test", type=int, default=200, help="GSM8K test problems to evaluate on")
    ap.add_argument("--graph", default="vote", help="graph that samples the training trajectories")
    ap.add_argument("--k", type=int, default=4, help="samples per problem in the vote graph")
    ap.add_argument("--steps", type=int, default=100, help="optimizer steps")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="adapter folder (default: a temporary one)")
    args = ap.parse_args()

    from studyhall.api import asolve_many
    from studyhall.config import load_settings
    from studyhall.evals.datasets import load_gsm8k
    from studyhall.serving.loader import load_chat_model
    from studyhall.training.config import make_config
    from studyhall.training.runs import train

    settings = load_settings(model=args.model, threads=args.threads)
    train_set = load_gsm8k(None, "train", settings.cache_dir).problems[: args.train]
    test_set = load_gsm8k(None, "test", settings.cache_dir).problems[: args.test]
    base = load_chat_model(args.model, settings)
    base.warm_up()
    print(f"model {args.model}  method {args.method}  train {len(train_set)} problems ({args.graph}, k={args.k})  "
          f"test {len(test_set)} problems (direct, greedy)", flush=True)

    started = time.perf_counter()
    options = {"k": args.k, "first": args.k, "adaptive": False} if args.graph == "vote" else {}
    trajs = asyncio.run(asolve_many([{"question": p.question, "gold": p.answer} for p in train_set],
                                    graph=args.graph, model=base, concurrency=args.concurrency, record=False,
                                    max_tokens=args.max_tokens, **options))
    print(f"sampled {len(trajs)} trajectories in {time.perf_counter() - started:.0f}s "
          f"({sum(bool(t.correct) for t in trajs)} correct finals)", flush=True)

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="gain-")) / "adapter"
    overrides = {"model": args.model, "max_steps": args.steps, "threads": args.threads}
    if args.method == "grpo":
        overrides |= {"max_completion_length": args.max_tokens}
    started = time.perf_counter()
    meta = train(args.method, trajs, out, config=make_config(args.method, overrides), settings=settings,
                 overwrite=True)
    print(f"trained {args.method} in {time.perf_counter() - started:.0f}s on {meta.data_size} rows -> {out}", flush=True)

    tuned = load_chat_model(args.model, settings, adapter=str(out))
    acc_base, wall_base, _ = asyncio.run(accuracy(base, test_set, "direct", args.max_tokens, args.concurrency))
    acc_tuned, wall_tuned, _ = asyncio.run(accuracy(tuned, test_set, "direct", args.max_tokens, args.concurrency))
    print(f"base     accuracy {acc_base:6.1%}  ({wall_base:.0f}s)")
    print(f"adapter  accuracy {acc_tuned:6.1%}  ({wall_tuned:.0f}s)   change {100 * (acc_tuned - acc_base):+.1f} points")
    print(json.dumps({"base": acc_base, "adapter": acc_tuned, "adapter_path": str(out), "metrics": meta.metrics}))


if __name__ == "__main__":
    from studyhall.errors import StudyhallError

    try:
        main()
    except StudyhallError as exc:
        raise SystemExit(f"error: {exc}") from None
