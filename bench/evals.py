"""Eval harness overhead and scaling, measured side by side in one run.

For the first N GSM8K test problems, all in flight at once (the backend batches them):
(a) raw backend: the student's prompts straight to the chat model, one batched generation;
(a') the student agent alone: the same calls plus its format retry (a reply with no number
     is asked again once), no graph, no checkpoints, no checks;
(b) the direct graph through the eval harness (run_eval: LangGraph, SQLite checkpoints,
    three checkers, one row written per problem) at concurrency N.
Prints generated tokens/s of each, (b)/(a) (the issue's target: the harness keeps >= 90% of
the raw backend's throughput) and (b)/(a'), the orchestration overhead alone: format
retries add a second, smaller batch that costs wall time in (a') and (b) but not in (a).
With --repeats R the three alternate R times and median ratios are reported. Then the
harness's problems/s at each --levels concurrency and its ratio to the first level.

The machine may be shared: numbers are noisy; the ratios are measured side by side.

    python bench/evals.py [--model SPEC] [--problems 16] [--max-tokens 256] [--levels 1,4,16] [--repeats 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


async def raw(model, questions: list[str], max_tokens: int) -> tuple[int, float]:
    """(a) Generated tokens and wall seconds for the student prompts, one batched generation."""
    from studyhall.agents import student
    from studyhall.agents.base import messages

    prompts = [messages(student.SYSTEM, student.user_prompt(q)) for q in questions]
    start = time.perf_counter()
    replies = await asyncio.gather(*(
        model.ainvoke(p, max_tokens=max_tokens, temperature=0.0) for p in prompts
    ))
    wall = time.perf_counter() - start
    return sum(r.usage_metadata["output_tokens"] for r in replies), wall


async def agent(model, questions: list[str], max_tokens: int) -> tuple[int, float]:
    """(a') Generated tokens and wall seconds for the student agent's calls, retries included."""
    from studyhall.agents import student

    start = time.perf_counter()
    outs = await asyncio.gather(*(
        student.solve(model, q, max_tokens=max_tokens, temperature=0.0) for q in questions
    ))
    wall = time.perf_counter() - start
    return sum(o.step.completion_tokens for o in outs), wall


def harness(model, out: Path, limit: int, concurrency: int, max_tokens: int, checkers) -> tuple[int, float, int, int]:
    """(b) Generated tokens, wall seconds (the whole run_eval call), problems and format retries."""
    from studyhall.evals.harness import run_eval

    start = time.perf_counter()
    summary = run_eval(out, model=model, limit=limit, concurrency=concurrency, max_tokens=max_tokens,
                       checkers=checkers)
    wall = time.perf_counter() - start
    r = summary.results
    return round(r.mean_completion_tokens * r.problems), wall, r.problems, r.retries


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="packaged:qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--problems", type=int, default=16, help="GSM8K test problems per measurement")
    ap.add_argument("--max-tokens", type=int, default=256, help="completion budget per call")
    ap.add_argument("--levels", default="1,4,16", help="concurrency levels for the scaling table ('' to skip)")
    ap.add_argument("--repeats", type=int, default=1, help="alternate (a), (a') and (b) this many times")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dtype", default="auto")
    args = ap.parse_args()

    from studyhall.evals.checkers import Checkers
    from studyhall.evals.datasets import load_gsm8k
    from studyhall.serving.loader import load_chat_model

    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    questions = [p.question for p in load_gsm8k(None, "test").problems[: args.problems]]
    t = time.perf_counter()
    model = load_chat_model(args.model, dtype=args.dtype, threads=args.threads,
                            max_batch_size=max([args.problems, *levels]))
    if hasattr(model, "warm_up"):
        model.warm_up()
    print(f"model {args.model}  problems {args.problems}  max tokens {args.max_tokens}  "
          f"cores {os.cpu_count()}  load {time.perf_counter() - t:.1f}s", flush=True)
    asyncio.run(raw(model, questions[:2], 8))  # warm the kernels

    def line(label: str, tokens: int, wall: float, extra: str = "") -> float:
        print(f"{label:34s} {tokens:6d} tokens in {wall:6.1f}s = {tokens / wall:7.2f} tok/s{extra}", flush=True)
        return tokens / wall

    with tempfile.TemporaryDirectory(prefix="bench-evals-") as tmp, Checkers() as checkers:
        vs_raw, vs_agent = [], []
        stats = getattr(getattr(model, "engine", None), "stats", None)

        def admitted(before: float) -> str:
            """How many times new requests entered the batch (1 = the burst was caught whole)."""
            return f"  ({stats['admissions'] - before:.0f} admissions)" if stats else ""

        def count() -> float:
            return stats["admissions"] if stats else 0

        for rep in range(args.repeats):
            c = count()
            tps_a = line(f"(a)  raw backend, {args.problems} at once", *asyncio.run(raw(model, questions, args.max_tokens)),
                         admitted(c))
            c = count()
            tps_s = line("(a') student agent, no graph", *asyncio.run(agent(model, questions, args.max_tokens)), admitted(c))
            c = count()
            tokens_b, wall_b, n_b, retries = harness(model, Path(tmp) / f"b{rep}", args.problems, args.problems,
                                                     args.max_tokens, checkers)
            tps_b = line("(b)  direct graph via the harness", tokens_b, wall_b,
                         f"  ({retries} format retries)" + admitted(c))
            vs_raw.append(tps_b / tps_a)
            vs_agent.append(tps_b / tps_s)
            print(f"     (b)/(a) {vs_raw[-1]:.2f}   (b)/(a') {vs_agent[-1]:.2f}", flush=True)
        median = " (median)" if args.repeats > 1 else ""
        ratio = statistics.median(vs_raw)
        print(f"harness / raw backend throughput{median}: {ratio:.2f}  "
              f"(target >= 0.90: {'PASS' if ratio >= 0.9 else 'MISS'})", flush=True)
        print(f"harness / student agent alone{median}: {statistics.median(vs_agent):.2f}  "
              f"(the orchestration overhead without the format-retry effect)", flush=True)

        rates: dict[int, float] = {}
        for c in levels:
            if c == args.problems:  # the same run as (b)
                rates[c] = n_b / wall_b
                note = "  (the last run (b))"
            else:
                _, wall, n, _ = harness(model, Path(tmp) / f"c{c}", args.problems, c, args.max_tokens, checkers)
                rates[c] = n / wall
                note = ""
            print(f"concurrency {c:3d}: {rates[c]:7.4f} problems/s  x{rates[c] / rates[levels[0]]:5.2f} "
                  f"vs concurrency {levels[0]}{note}", flush=True)


if __name__ == "__main__":
    main()
