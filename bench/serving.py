"""Serving throughput: one stream vs 4, 8, 16, 32 concurrent requests, in one run.

Every request generates exactly --tokens tokens (ignore_eos) from a GSM8K prompt, so the
numbers compare like with like. Prints tokens/s per level and its ratio to the single
stream. Target: 8 concurrent requests reach >= 6x the single stream. With --prepack both (the
default) every level runs twice, side by side: linear layers on oneDNN-packed weights (the
engine's default on CPU) and on plain weights. With --prefill both each level above 1 also runs
with new prompts prefilled one at a time and merged into the batch (the engine's default) and
as one left-padded batch.

    python bench/serving.py [--model SPEC] [--tokens 128] [--threads N] [--dtype auto] [--prefill each] [--prepack both]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


async def level(model, prompts, k: int, tokens: int) -> tuple[float, float]:
    from langchain_core.messages import HumanMessage

    start = time.perf_counter()
    msgs = await asyncio.gather(*(
        model.ainvoke([HumanMessage(p)], max_tokens=tokens, ignore_eos=True) for p in prompts[:k]
    ))
    wall = time.perf_counter() - start
    generated = sum(m.usage_metadata["output_tokens"] for m in msgs)
    return generated / wall, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="packaged:qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--tokens", type=int, default=256, help="tokens per request (GSM8K answers run 150-300)")
    ap.add_argument("--levels", default="1,4,8,16,32")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--prefill", choices=["each", "batched", "both"], default="each")
    ap.add_argument("--prepack", choices=["packed", "plain", "both"], default="both",
                    help="linear layers on oneDNN-packed weights (the default) or plain F.linear")
    args = ap.parse_args()

    from studyhall.evals.datasets import load_gsm8k
    from studyhall.serving.loader import load_chat_model

    levels = [int(x) for x in args.levels.split(",")]
    prompts = [p.question for p in load_gsm8k(None, "test").problems[: max(levels)]]
    model = load_chat_model(args.model, dtype=args.dtype, threads=args.threads, max_batch_size=max(levels))
    t = time.perf_counter()
    model.warm_up()
    import torch

    print(f"model {args.model}  dtype {model.engine.model.dtype}  threads {torch.get_num_threads()}  "
          f"load {time.perf_counter() - t:.1f}s  tokens/request {args.tokens}")
    engine = model.engine
    summary: dict[str, dict[tuple[int, str], float]] = {}
    stats = engine.stats
    default_prefill = engine.prefill_each
    from studyhall.serving.cpu_linear import pack_linears, unpack_linears

    # (Un)packing runs on the engine's thread: torch work on this one would throttle it (engine.call).
    default_packed = engine.call(lambda: unpack_linears(engine.base_model)).result() > 0
    prefills = ["each", "batched"] if args.prefill == "both" else [args.prefill]
    prepacks = ["packed", "plain"] if args.prepack == "both" else [args.prepack]
    for prepack in prepacks:
        layers = engine.call(lambda: pack_linears(engine.base_model)).result() if prepack == "packed" else 0
        print(f"--- weights {prepack} ({layers} linear layers on oneDNN-packed weights)", flush=True)
        asyncio.run(level(model, prompts, 1, 8))  # warm the kernels
        results: dict[tuple[int, str], float] = {}
        decode: dict[tuple[int, str], float] = {}
        single = None
        for k in levels:
            for mode in prefills if k > 1 else prefills[:1]:
                engine.prefill_each = mode == "each"
                engine.clear_prefix_cache().result()  # each level starts cold: no prompt seen before
                before = dict(stats)
                tps, wall = asyncio.run(level(model, prompts, k, args.tokens))
                d = {key: stats[key] - before[key] for key in stats}
                results[k, mode] = tps
                decode[k, mode] = d["decode_row_steps"] / d["decode_seconds"] if d["decode_seconds"] else 0.0
                single = single or (tps, decode[k, mode])
                print(
                    f"{prepack:6s} concurrent {k:3d} prefill {mode:7s}: {tps:7.1f} tok/s  wall {wall:6.1f}s  ratio vs "
                    f"single {tps / single[0]:5.2f}x  | decode only {decode[k, mode]:6.1f} tok/s "
                    f"({decode[k, mode] / single[1]:5.2f}x)  prefill "
                    f"{d['prefill_tokens'] / max(d['prefill_seconds'], 1e-9):5.0f} tok/s in {d['prefills']:.0f} passes"
                    f" ({d['prefill_seconds']:.1f}s; {d['prefix_tokens']:.0f} prompt tokens reused)",
                    flush=True,
                )
        engine.call(lambda: unpack_linears(engine.base_model)).result()
        summary[prepack] = results
        if single and (8, prefills[0]) in results:
            for mode in prefills:
                ratio = results[8, mode] / single[0]
                print(f"target: 8 concurrent >= 6x single stream, weights {prepack}, prefill {mode}: {ratio:.2f}x -> "
                      f"{'PASS' if ratio >= 6 else 'MISS'}  (decode only {decode[8, mode] / single[1]:.2f}x)")
    if len(prepacks) == 2:
        for k in levels:
            mode = prefills[0]
            print(f"packed / plain weights, concurrent {k:3d}: "
                  f"{summary['packed'][k, mode] / summary['plain'][k, mode]:.2f}x tokens/s")
    engine.prefill_each = default_prefill
    if default_packed:
        engine.call(lambda: pack_linears(engine.base_model)).result()

if __name__ == "__main__":
    main()
