"""Python sandbox throughput and overhead, measured side by side in one run.

Prints runs/s for a trivial snippet sequentially and with 8 at once, and the per-run cost of
a sandboxed run against plain `python -c` and `python -I -S -c` (the same interpreter without
the confinement) started the same way, as ratios.

    python bench/sandbox.py [--runs 20] [--concurrency 8]

The three sequential measurements are interleaved run by run, so load from other work on
the machine affects them alike.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studyhall.tools.sandbox import Sandbox, SandboxLimits  # noqa: E402

SNIPPET = "1 + 1"


def plain(args: list[str]) -> float:
    """Seconds for one run of the interpreter started with `args`."""
    start = time.perf_counter()
    subprocess.run([sys.executable, *args, f"print({SNIPPET})"], check=True, capture_output=True)
    return time.perf_counter() - start


def sandboxed(sandbox: Sandbox) -> float:
    start = time.perf_counter()
    assert sandbox.run(SNIPPET).value == "2"
    return time.perf_counter() - start


async def concurrent(sandbox: Sandbox, runs: int) -> float:
    start = time.perf_counter()
    results = await asyncio.gather(*(sandbox.arun(SNIPPET) for _ in range(runs)))
    assert all(r.value == "2" for r in results), results[0].error
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20, help="runs per measurement")
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()

    sandbox = Sandbox(SandboxLimits(), max_concurrent=args.concurrency)
    r = sandbox.run(SNIPPET)  # warm caches
    assert r.ok and r.value == "2", r.error

    # Interleaved, so a change in the machine's load hits all three alike.
    totals = {"python_c": 0.0, "isolated_c": 0.0, "sandbox": 0.0}
    for _ in range(args.runs):
        totals["python_c"] += plain(["-c"])
        totals["isolated_c"] += plain(["-I", "-S", "-c"])
        totals["sandbox"] += sandboxed(sandbox)
    python_c, isolated_c, sequential = (totals[k] / args.runs
                                        for k in ("python_c", "isolated_c", "sandbox"))
    wall = asyncio.run(concurrent(sandbox, args.runs * 2))
    per_run_8 = wall / (args.runs * 2)

    print(f"layers: {', '.join(r.layers)}")
    print(f"{'':34}{'s/run':>9}{'runs/s':>9}{'ratio':>9}")
    rows = [
        ("python -c (site, plain)", python_c),
        ("python -I -S -c (plain)", isolated_c),
        ("sandbox, sequential", sequential),
        (f"sandbox, {args.concurrency} at once", per_run_8),
    ]
    for name, s in rows:
        print(f"{name:34}{s:9.4f}{1 / s:9.1f}{s / python_c:8.2f}x")
    print(f"sandbox overhead per run vs python -c: {sequential - python_c:+.4f} s "
          f"({sequential / python_c:.2f}x); vs python -I -S -c: {sequential - isolated_c:+.4f} s "
          f"({sequential / isolated_c:.2f}x)")
    print(f"{args.concurrency} at once vs sequential: {sequential / per_run_8:.2f}x the runs/s")


if __name__ == "__main__":
    main()
