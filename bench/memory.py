"""Episodic memory: insert throughput and query latency at 1k, 10k and 100k episodes.

One store grows through the sizes; at each size it prints, side by side:
  - insert episodes/s excluding embedding (vectors precomputed) for the episodes added to
    reach that size, and including embedding (question + solution encoded) for a further
    batch of new episodes;
  - query latency p50/p95 excluding embedding (query vectors given): the raw chroma kNN,
    ``search_vector`` (episodes decoded), the ``similar_solved`` search (correct only) and
    ``novelty`` (solutions collection); and ``similar_solved`` end to end (text in);
  - the cost of the embedding alone (one text), for comparison.
Target: query p50 under 10 ms at 100k, excluding embedding.

Embedding 200k texts takes hours on 2 shared cores, so --unique texts are embedded once and
reused for scale: episode j takes template j % unique with its own id and a slightly
perturbed copy of that template's vectors (Gaussian noise, renormalised), so every stored
vector is distinct. The output says so.

    python bench/memory.py [--sizes 1000,10000,100000] [--unique 2000] [--queries 200] [--url URL]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

NAMES = ["Natalia", "Tom", "Mia", "Ravi", "Lena", "Omar", "Julie", "Ken", "Ada", "Sam", "Weng", "Betty"]
ITEMS = ["apples", "clips", "marbles", "books", "cookies", "stickers", "pencils", "eggs", "shirts", "tickets"]
TEMPLATES = [
    ("{n} has {a} {i} and buys {b} more. How many {i} does {n} have now?", "{a} + {b} = {r1}", "{r1}"),
    ("{n} sold {a} {i} in April and half as many in May. How many {i} did {n} sell in total?",
     "In May {n} sold {a} / 2 = {h}. Total {a} + {h} = {r2}", "{r2}"),
    ("{n} earns ${a} an hour and works {b} hours. How much does {n} earn?", "{a} * {b} = {r3}", "{r3}"),
    ("A box holds {b} {i}. {n} fills {a} boxes. How many {i} is that?", "{a} * {b} = {r3}", "{r3}"),
    ("{n} had {r1} {i} and gave {b} to a friend. How many {i} are left?", "{r1} - {b} = {a}", "{a}"),
]


def synthetic(count: int, seed: int = 0) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        q, s, ans = rng.choice(TEMPLATES)
        a, b = rng.randrange(2, 200, 2), rng.randrange(2, 60)
        f = {"n": rng.choice(NAMES), "i": rng.choice(ITEMS), "a": a, "b": b, "h": a // 2,
             "r1": a + b, "r2": a + a // 2, "r3": a * b}
        out.append((q.format(**f), s.format(**f), ans.format(**f)))
    return out


def pct(samples: list[float], p: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(samples) * 1000, p))


def timed(fn, args_list) -> list[float]:
    out = []
    for args in args_list:
        t = time.perf_counter()
        fn(*args)
        out.append(time.perf_counter() - t)
    return out


def raw_knn(mem, vector) -> None:
    """chroma's own kNN (k=5, distances only), under the store's session lock."""
    with mem.handle.session() as s:
        s.collection(mem.name, mem._ef).query(query_embeddings=[vector], n_results=5, include=["distances"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--unique", type=int, default=2000, help="texts embedded once and reused for scale")
    ap.add_argument("--with-embedding", type=int, default=200, help="episodes inserted end to end per size")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--url", default=None, help="a chroma server instead of an embedded temporary folder")
    ap.add_argument("--keep", default=None, help="folder to keep the store in (default: a temporary one)")
    args = ap.parse_args()

    import numpy as np
    import torch

    from studyhall.memory.episodes import Episode
    from studyhall.memory.store import EpisodicMemory

    sizes = [int(s) for s in args.sizes.split(",")]
    folder = args.keep or tempfile.mkdtemp(prefix="bench-memory-")
    mem = (EpisodicMemory.open(url=args.url, collection=f"bench-{int(time.time())}") if args.url
           else EpisodicMemory.open(path=folder))
    print(f"store {mem.location}  model {mem.model.name} ({mem.model.dim} dims)  torch threads {torch.get_num_threads()}, "
          f"{mem.model.threads} for embedding  load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    # The embedding alone.
    texts = synthetic(args.unique, seed=1)
    t = time.perf_counter()
    mem.model.load()
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    qvec = mem.model.encode([q for q, _, _ in texts])
    svec = mem.model.encode([s for _, s, _ in texts])
    embed_rate = 2 * len(texts) / (time.perf_counter() - t)
    probe = synthetic(60, seed=2)
    one = timed(lambda x: mem.model.encode([x]), [(q,) for q, _, _ in probe])
    print(f"embedding: load {load_s:.1f}s, batch {embed_rate:.0f} texts/s, one text p50 {pct(one, 50):.1f} ms "
          f"p95 {pct(one, 95):.1f} ms")
    print(f"scale: {args.unique} unique question/solution texts embedded once; episode j reuses template "
          f"j % {args.unique} with its own id and a perturbed copy of its vectors")

    rng = np.random.default_rng(0)
    base = datetime(2025, 1, 1, tzinfo=UTC)

    def make(j0: int, j1: int) -> tuple[list[Episode], np.ndarray, np.ndarray]:
        eps, idx = [], []
        for j in range(j0, j1):
            q, s, ans = texts[j % len(texts)]
            eps.append(Episode(question=f"{q} (#{j})", solution=s, answer=ans, correct=j % 3 != 0,
                               graph="direct", agent="student", model="bench", trajectory_id=f"bench-{j}",
                               created_at=base + timedelta(seconds=j)))
            idx.append(j % len(texts))

        def jitter(v: np.ndarray) -> np.ndarray:
            out = v[idx] + 0.02 * rng.standard_normal((len(idx), v.shape[1])).astype(np.float32)
            return out / np.linalg.norm(out, axis=1, keepdims=True)

        return eps, jitter(qvec), jitter(svec)

    rows = []
    stored, fresh = 0, 10_000_000  # fresh: ids for the end-to-end inserts, apart from the scale ids
    for size in sizes:
        t = time.perf_counter()
        for j0 in range(stored, size, 5000):
            eps, qv, sv = make(j0, min(size, j0 + 5000))
            mem.add(eps, question_vectors=qv, solution_vectors=sv)
            print(f"  inserted {min(size, j0 + 5000)}/{size} ...", end="\r", flush=True)
        excl = (size - stored) / (time.perf_counter() - t) if size > stored else float("nan")
        stored = size
        e2e_q = synthetic(args.with_embedding, seed=size)
        e2e = [Episode(question=f"{q} [fresh {fresh + i}]", solution=s, answer=a, correct=True, graph="direct",
                       agent="student", model="bench") for i, (q, s, a) in enumerate(e2e_q)]
        fresh += len(e2e)
        t = time.perf_counter()
        mem.add(e2e)
        incl = len(e2e) / (time.perf_counter() - t)
        total = mem.count()

        qs = synthetic(args.queries, seed=size + 7)
        vecs = mem.model.encode([q for q, _, _ in qs])
        raw = timed(lambda v: raw_knn(mem, v), [(v,) for v in vecs])
        search = timed(lambda v: mem.search_vector(v, 3), [(v,) for v in vecs])
        solved = timed(lambda v: mem.search_vector(v, 3, solved_only=True), [(v,) for v in vecs])
        novelty = timed(lambda v: mem.novelties_of_vectors([v], 5), [(v,) for v in vecs])
        end_to_end = timed(lambda q: mem.similar_solved(q, 3), [(q,) for q, _, _ in qs[:60]])
        rows.append((size, total, excl, incl, raw, search, solved, novelty, end_to_end))
        print(" " * 40, end="\r")
        print(f"size {size:>7,} (stored {total:,}): insert {excl:7.0f} eps/s excl. embedding, {incl:6.1f} eps/s incl. | "
              f"query p50/p95 ms excl. embedding: kNN {pct(raw, 50):.1f}/{pct(raw, 95):.1f}  "
              f"search {pct(search, 50):.1f}/{pct(search, 95):.1f}  solved {pct(solved, 50):.1f}/{pct(solved, 95):.1f}  "
              f"novelty {pct(novelty, 50):.1f}/{pct(novelty, 95):.1f} | similar_solved(text) "
              f"{pct(end_to_end, 50):.1f}/{pct(end_to_end, 95):.1f}", flush=True)

    print()
    head = (f"{'episodes':>9} | {'insert/s excl':>13} {'insert/s incl':>13} | {'kNN p50':>8} {'p95':>6} | "
            f"{'search p50':>10} {'p95':>6} | {'solved p50':>10} {'p95':>6} | {'novelty p50':>11} {'p95':>6} | "
            f"{'+embed p50':>10} {'p95':>6} | {'embed alone p50':>15} {'p95':>6}")
    print(head)
    print("-" * len(head))
    for size, _total, excl, incl, raw, search, solved, novelty, e2e in rows:
        print(f"{size:>9,} | {excl:>13.0f} {incl:>13.1f} | {pct(raw, 50):>8.2f} {pct(raw, 95):>6.2f} | "
              f"{pct(search, 50):>10.2f} {pct(search, 95):>6.2f} | {pct(solved, 50):>10.2f} {pct(solved, 95):>6.2f} | "
              f"{pct(novelty, 50):>11.2f} {pct(novelty, 95):>6.2f} | {pct(e2e, 50):>10.2f} {pct(e2e, 95):>6.2f} | "
              f"{pct(one, 50):>15.2f} {pct(one, 95):>6.2f}")
    last = rows[-1]
    p50 = pct(last[6], 50)
    print(f"\ninsert/s excl = the episodes added to reach that size, vectors given; incl = {args.with_embedding} "
          f"more episodes with question and solution embedded. Latencies in ms; '+embed' = similar_solved "
          f"from text (embedding included).")
    print(f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other work shares them)")
    print(f"target: similar_solved search p50 < 10 ms at {last[0]:,} excluding embedding: {p50:.2f} ms -> "
          f"{'PASS' if p50 < 10 else 'MISS'}  (embedding one text alone: p50 {pct(one, 50):.2f} ms)")
    if not args.keep and not args.url:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
