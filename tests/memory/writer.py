"""A separate process that writes synthetic episodes, printing each batch it committed.

    python -m tests.memory.writer --path DIR | --url URL [--collection C] --tag A --batches N --size M
    python -m tests.memory.writer --path DIR | --url URL [--collection C] --count

Vectors are random unit vectors (seeded by the tag) so the process spends its time in the
store, not in the embedding model: the reliability tests kill it in the middle of a write.
"""

from __future__ import annotations

import argparse
import zlib

import numpy as np

from studyhall.memory.episodes import Episode
from studyhall.memory.store import EpisodicMemory


def episodes(tag: str, batch: int, size: int) -> list[Episode]:
    return [
        Episode(question=f"{tag} problem {batch}-{i}: how many apples?", solution=f"{tag} solution {batch}-{i}",
                answer=str(i), correct=i % 2 == 0, graph="direct", agent="student", model="fake",
                trajectory_id=f"{tag}-{batch}-{i}")
        for i in range(size)
    ]


def vectors(tag: str, batch: int, size: int, dim: int) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(f"{tag}-{batch}".encode()))
    v = rng.standard_normal((size, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--path")
    ap.add_argument("--url")
    ap.add_argument("--collection", default="episodes")
    ap.add_argument("--tag", default="W")
    ap.add_argument("--batches", type=int, default=5)
    ap.add_argument("--size", type=int, default=50)
    ap.add_argument("--count", action="store_true", help="print how many episodes are stored, and exit")
    args = ap.parse_args()
    mem = EpisodicMemory.open(path=args.path, url=args.url, collection=args.collection)
    if args.count:
        print(mem.count())
        return
    print("open", flush=True)
    for b in range(args.batches):
        v = vectors(args.tag, b, args.size, mem.model.dim)
        mem.add(episodes(args.tag, b, args.size), question_vectors=v, solution_vectors=v)
        print(f"committed {b}", flush=True)


if __name__ == "__main__":
    main()
