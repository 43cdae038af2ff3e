"""Episodic memory: solved problems kept in chroma and found again by meaning.

The API the graphs call (all thread-safe; from async code use the ``a*`` twins, which run
them in a worker thread with ``asyncio.to_thread``)::

    mem = EpisodicMemory.open(settings=None, path=None, url=None)
    mem.similar_solved(question: str, k: int = 3) -> list[dict]     # worked examples
    mem.novelty(text: str, k: int = 5) -> float                     # intrinsic reward
    mem.drop_near_duplicates(questions: list[str], threshold: float = 0.95) -> list[int]
    mem.add_trajectories(trajs) -> int                              # remember finished runs

- ``similar_solved``: the k stored episodes marked correct whose *questions* are nearest to
  ``question`` (cosine), as ``{"question", "solution", "answer"}`` dicts, nearest first; the
  shape ``GraphState["examples"]`` and the student prompt take. Episodes of the very same
  question (after normalising case and spaces) are skipped unless ``include_same=True``, so
  an eval never reads its own answer from memory.
- ``novelty``: ``1 - mean(max(0, cos(text, s_i)))`` over the k stored *solutions* s_i nearest
  to ``text``. Range [0, 1]: 0 = a copy is stored, 1 = nothing alike (an empty memory gives
  1.0; with fewer than k stored, the mean is over those there are).
- ``drop_near_duplicates``: the indices of ``questions`` to keep, in order: a question is
  dropped when a stored question, or an earlier kept one in the same list, has cosine
  similarity >= ``threshold`` with it.
- ``add_trajectories``: one episode per trajectory with a solution (others are skipped), from
  its final solution and the agent that produced it; writing a run again updates it.

Layout: two collections over the same episode ids. ``NAME`` holds question vectors, the
question as document and every other field as metadata; ``NAME-solutions`` holds solution
vectors for novelty. A write goes to the solutions first, so an episode is in ``NAME``
(counted, returned) only once both are written. Each collection records its embedding model
and dimension; opening it with another model fails (never a silent dimension mismatch).
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from studyhall.config import Settings
from studyhall.errors import ConfigError, InputError
from studyhall.memory.client import ChromaHandle, handle_for
from studyhall.memory.embeddings import EmbeddingModel, chroma_embedding, resolve_model
from studyhall.memory.episodes import (
    EPISODE_VERSION,
    Episode,
    normalize_text,
    read_episodes,
    validate_episode,
    write_episodes,
)
from studyhall.records import Trajectory

MEMORY_FORMAT = 1
DEFAULT_COLLECTION = "episodes"
WRITE_BATCH = 1000
PAGE = 2000


class Neighbor(BaseModel):
    """A stored episode and its cosine similarity to what was asked."""

    episode: Episode
    similarity: float


class EpisodicMemory:
    """Episodes in a chroma store (embedded folder or server), embedded with one model."""

    # Filtered nearest-neighbour searches over-fetch this many unfiltered candidates at most
    # before falling back to chroma's (much slower) ``where`` search.
    overfetch_limit = 1024

    def __init__(self, handle: ChromaHandle, model: EmbeddingModel, name: str = DEFAULT_COLLECTION) -> None:
        if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9._-]{1,400}[a-zA-Z0-9]", name):
            raise InputError(f"collection name {name!r} is not allowed",
                             hint="3-400 characters from a-z A-Z 0-9 . _ -, starting and ending with a letter or digit")
        self.handle = handle
        self.model = model
        self.name = name
        self.solutions_name = f"{name}-solutions"
        self._ef = chroma_embedding(model)
        with handle.session() as s:
            batch = s.max_batch_size()
        self._batch = max(1, min(WRITE_BATCH, batch))
        self._ensure_collections()

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        settings: Settings | None = None,
        path: str | Path | None = None,
        url: str | None = None,
        *,
        collection: str = DEFAULT_COLLECTION,
        embedding_model: str | None = None,
    ) -> EpisodicMemory:
        """Open (creating if needed) the memory: ``url`` (a chroma server) or ``path`` (a
        folder) when given, else ``settings.memory_url``, else ``settings.home / "memory"``.
        The embedding model is ``embedding_model`` or ``settings.embedding_model``."""
        if path is not None and url is not None:
            raise InputError("give a memory folder or a server URL, not both")
        if settings is None and (embedding_model is None or (path is None and url is None)):
            from studyhall.config import load_settings

            settings = load_settings()
        if path is None and url is None:
            url = settings.memory_url
            if url is None:
                path = settings.memory_dir
        model = resolve_model(embedding_model or (settings.embedding_model if settings else None))
        handle = handle_for(path=path) if url is None else handle_for(url=url)
        return cls(handle, model, collection)

    def _ensure_collections(self) -> None:
        from chromadb.errors import NotFoundError

        meta = {
            "embedding_model": self.model.name,
            "embedding_dim": self.model.dim,
            "studyhall_memory_format": MEMORY_FORMAT,
        }
        for name in (self.name, self.solutions_name):
            with self.handle.session() as s:
                try:
                    col = s.collection(name, self._ef)
                except NotFoundError:
                    col = None
            if col is None:  # creating is a write: other processes reopen to see it
                with self.handle.session(write=True) as s:
                    col = s.get_or_create(name, self._ef, meta)
            self._check_model(col.metadata or {})

    def _check_model(self, stored: dict[str, Any]) -> None:
        name, dim = stored.get("embedding_model"), stored.get("embedding_dim")
        if name is None or dim is None:
            raise ConfigError(
                f"the collection {self.name!r} at {self.handle.location} was not made by studyhall "
                "(it records no embedding model)",
                hint="use another collection name or another memory folder",
            )
        if name != self.model.name or int(dim) != self.model.dim:
            raise ConfigError(
                f"the memory at {self.handle.location} (collection {self.name!r}) was built with "
                f"embedding model {name!r} ({dim} dimensions), but the configured embedding model "
                f"is {self.model.name!r} ({self.model.dim} dimensions)",
                hint=f"set embedding_model = {name!r} to use this memory, or point the memory "
                "elsewhere (path, memory_url or collection) to start one with the new model",
            )

    def _cols(self, s: ChromaHandle) -> tuple[Any, Any]:
        return s.collection(self.name, self._ef), s.collection(self.solutions_name, self._ef)

    @property
    def location(self) -> str:
        return self.handle.location

    # ------------------------------------------------------------------ writing

    def add(
        self,
        episodes: Iterable[Episode | dict[str, Any]],
        *,
        question_vectors: Sequence[Sequence[float]] | None = None,
        solution_vectors: Sequence[Sequence[float]] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Write (insert or update) episodes; returns how many. Every record is validated
        before anything is written, so one bad record writes nothing. Vectors are computed
        with the model unless given (both, one row per episode, already normalised)."""
        eps = [validate_episode(e, where=f"episode {i}") for i, e in enumerate(episodes)]
        if not eps:
            return 0
        if (question_vectors is None) != (solution_vectors is None):
            raise InputError("give both question_vectors and solution_vectors, or neither")
        import numpy as np

        if question_vectors is not None:
            qv = np.asarray(question_vectors, dtype=np.float32)
            sv = np.asarray(solution_vectors, dtype=np.float32)
            for label, v in (("question_vectors", qv), ("solution_vectors", sv)):
                if v.shape != (len(eps), self.model.dim):
                    raise InputError(f"{label} has shape {v.shape}, expected ({len(eps)}, {self.model.dim})")
        else:
            qv = sv = None
        # The last write of an id wins within a batch too (chroma rejects duplicate ids in one call).
        last = {ep.id: i for i, ep in enumerate(eps)}
        keep = sorted(last.values())
        done = 0
        for start in range(0, len(keep), self._batch):
            idx = keep[start:start + self._batch]
            chunk = [eps[i] for i in idx]
            if qv is None:
                q = self.model.encode([e.question for e in chunk])
                v = self.model.encode([e.solution for e in chunk])
            else:
                q, v = qv[idx], sv[idx]
            self._write(chunk, q, v)
            done += len(chunk)
            if progress:
                progress(done, len(keep))
        return len(keep)

    def _write(self, eps: list[Episode], q: Any, v: Any) -> None:
        ids = [e.id for e in eps]
        with self.handle.session(write=True) as s:
            episodes, solutions = self._cols(s)
            solutions.upsert(ids=ids, embeddings=v, metadatas=[_solution_metadata(e) for e in eps])
            episodes.upsert(ids=ids, embeddings=q, documents=[e.question for e in eps],
                            metadatas=[_metadata(e) for e in eps])

    def add_trajectories(self, trajs: Iterable[Trajectory], agent: str | None = None) -> int:
        """Remember finished runs: one episode per trajectory that has a solution (runs
        without one are skipped). Returns how many episodes were written."""
        eps = []
        for t in trajs:
            if not (t.solution and t.solution.strip() and t.question.strip()):
                continue
            eps.append(Episode.from_trajectory(t, agent=agent))
        return self.add(eps)

    def forget(self, before: datetime) -> int:
        """Delete episodes created before ``before`` (naive = UTC); returns how many."""
        cutoff = (before if before.tzinfo else before.replace(tzinfo=UTC)).timestamp()
        where = {"created_ts": {"$lt": cutoff}}
        with self.handle.session(write=True) as s:
            episodes, solutions = self._cols(s)
            ids = episodes.get(where=where, include=[])["ids"]
            # solution vectors go by their own timestamps: this also clears any left behind
            # by a write that died between the two collections
            vector_ids = solutions.get(where=where, include=[])["ids"]
            for start in range(0, len(ids), self._batch):
                episodes.delete(ids=ids[start:start + self._batch])
            for start in range(0, len(vector_ids), self._batch):
                solutions.delete(ids=vector_ids[start:start + self._batch])
        return len(ids)

    # ------------------------------------------------------------------ reading

    def count(self) -> int:
        with self.handle.session() as s:
            return self._cols(s)[0].count()

    def get(self, episode_id: str) -> Episode | None:
        found = self.get_many([episode_id])
        return found[0] if found else None

    def get_many(self, ids: Sequence[str]) -> list[Episode]:
        """The stored episodes among ``ids``, in the order asked (missing ones left out)."""
        if not ids:
            return []
        with self.handle.session() as s:
            got = self._cols(s)[0].get(ids=list(ids), include=["documents", "metadatas"])
        by_id = {i: _episode(i, d, m) for i, d, m in zip(got["ids"], got["documents"], got["metadatas"], strict=True)}
        return [by_id[i] for i in ids if i in by_id]

    def iter_episodes(self, page: int = PAGE) -> Iterable[Episode]:
        """Every stored episode, a page at a time."""
        offset = 0
        while True:
            with self.handle.session() as s:
                got = self._cols(s)[0].get(include=["documents", "metadatas"], limit=page, offset=offset)
            if not got["ids"]:
                return
            for i, d, m in zip(got["ids"], got["documents"], got["metadatas"], strict=True):
                yield _episode(i, d, m)
            offset += len(got["ids"])

    def search(self, text: str, k: int = 5, *, solved_only: bool = False) -> list[Neighbor]:
        """The k episodes whose questions are nearest to ``text``, nearest first."""
        return self._nearest(self._embed_one(text), k, solved_only=solved_only)

    def search_vector(self, vector: Sequence[float], k: int = 5, *, solved_only: bool = False) -> list[Neighbor]:
        """``search`` by an already computed (normalised) question vector."""
        return self._nearest(vector, k, solved_only=solved_only)

    def similar_solved(self, question: str, k: int = 3, *, include_same: bool = False) -> list[dict[str, Any]]:
        """Worked examples: the k nearest correctly solved episodes (see the module doc)."""
        _check_text(question, "question")
        if k <= 0:
            return []
        skip = None if include_same else normalize_text(question)
        hits = self._nearest(self._embed_one(question), k, solved_only=True, skip_question=skip)
        return [{"question": h.episode.question, "solution": h.episode.solution,
                 "answer": h.episode.answer} for h in hits]

    def _nearest(self, vector: Any, k: int, *, solved_only: bool = False,
                 skip_question: str | None = None) -> list[Neighbor]:
        """Nearest episodes by question vector. Filters are applied to an over-fetched
        unfiltered candidate list (a filtered HNSW search costs ~100x more at 100k); only when
        the candidates run out of matches does it fall back to chroma's ``where`` search.
        Only the episodes returned are decoded."""
        if k <= 0:
            return []

        def wanted(row: tuple[str, str, dict[str, Any], float]) -> bool:
            if solved_only and row[2].get("correct") is not True:
                return False
            return skip_question is None or normalize_text(row[1] or "") != skip_question

        filtered = solved_only or skip_question is not None
        n = max(4 * k, 16) if filtered else k
        with self.handle.session() as s:
            episodes = self._cols(s)[0]
            while True:
                rows = self._query(episodes, vector, n)
                hits = [r for r in rows if wanted(r)]
                if len(hits) >= k or len(rows) < n:  # enough, or the whole collection seen
                    break
                if n >= self.overfetch_limit:
                    where = {"correct": True} if solved_only else None
                    extra = 0 if skip_question is None else 8
                    hits = [r for r in self._query(episodes, vector, k + extra, where=where) if wanted(r)]
                    break
                n *= 4
        return [Neighbor(episode=_episode(i, d, m), similarity=1.0 - dist) for i, d, m, dist in hits[:k]]

    @staticmethod
    def _query(col: Any, vector: Any, n: int,
               where: dict[str, Any] | None = None) -> list[tuple[str, str, dict[str, Any], float]]:
        got = col.query(query_embeddings=[vector], n_results=n, where=where,
                        include=["documents", "metadatas", "distances"])
        return [(i, d, m or {}, float(dist)) for i, d, m, dist in
                zip(got["ids"][0], got["documents"][0], got["metadatas"][0], got["distances"][0], strict=True)]

    def novelty(self, text: str, k: int = 5) -> float:
        """``1 - mean(max(0, cos))`` to the k nearest stored solutions, in [0, 1]."""
        return self.novelties([text], k)[0]

    def novelties(self, texts: Sequence[str], k: int = 5) -> list[float]:
        """``novelty`` for many texts, embedded and queried together (an RL batch)."""
        if k <= 0:
            raise InputError(f"novelty needs k >= 1, got {k}")
        texts = list(texts)
        for i, t in enumerate(texts):
            _check_text(t, f"text {i}")
        if not texts:
            return []
        vectors = self.model.encode(texts)
        return self.novelties_of_vectors(vectors, k)

    def novelties_of_vectors(self, vectors: Any, k: int = 5) -> list[float]:
        import numpy as np

        if len(vectors) == 0:
            return []
        with self.handle.session() as s:
            got = self._cols(s)[1].query(query_embeddings=list(vectors), n_results=k, include=["distances"])
        out = []
        for dists in got["distances"]:
            sims = np.clip(1.0 - np.asarray(dists, dtype=np.float64), 0.0, 1.0)
            out.append(float(1.0 - sims.mean()) if len(sims) else 1.0)
        return out

    def is_near_duplicate(self, question: str, threshold: float = 0.95) -> bool:
        """Whether a stored question has cosine similarity >= threshold with ``question``."""
        return not self.drop_near_duplicates([question], threshold)

    def drop_near_duplicates(self, questions: list[str], threshold: float = 0.95) -> list[int]:
        """Indices of ``questions`` to keep (see the module doc)."""
        import numpy as np

        if not -1.0 <= threshold <= 1.0:
            raise InputError(f"threshold must be a cosine similarity in [-1, 1], got {threshold}")
        for i, q in enumerate(questions):
            _check_text(q, f"question {i}")
        if not questions:
            return []
        vectors = self.model.encode(list(questions))
        with self.handle.session() as s:
            got = self._cols(s)[0].query(query_embeddings=list(vectors), n_results=1, include=["distances"])
        stored = [1.0 - d[0] if d else -1.0 for d in got["distances"]]
        kept: list[int] = []
        for i, sim in enumerate(stored):
            if sim >= threshold:
                continue
            if kept and float(np.max(vectors[kept] @ vectors[i])) >= threshold:
                continue
            kept.append(i)
        return kept

    def _embed_one(self, text: str) -> Any:
        _check_text(text, "text")
        return self.model.encode([text])[0]

    # ------------------------------------------------------------------ files and stats

    def export_jsonl(self, path: str | Path) -> int:
        """Every episode as one JSON line; returns how many."""
        return write_episodes(path, self.iter_episodes())

    def import_jsonl(self, path: str | Path, progress: Callable[[int, int], None] | None = None) -> int:
        """Read and validate the whole file (a bad line names itself and writes nothing),
        then add the episodes; returns how many were written."""
        if not Path(path).is_file():
            raise InputError(f"no such file: {path}")
        return self.add(list(read_episodes(path)), progress=progress)

    def stats(self) -> dict[str, Any]:
        counts: dict[str, Counter] = {k: Counter() for k in ("correct", "graph", "agent", "model")}
        first = last = None
        total = 0
        for ep in self.iter_episodes():
            total += 1
            counts["correct"][{True: "correct", False: "wrong", None: "unknown"}[ep.correct]] += 1
            for key in ("graph", "agent", "model"):
                counts[key][getattr(ep, key)] += 1
            first = ep.created_at if first is None or ep.created_at < first else first
            last = ep.created_at if last is None or ep.created_at > last else last
        with self.handle.session() as s:
            solutions = self._cols(s)[1].count()
        return {
            "location": self.location,
            "collection": self.name,
            "embedding_model": self.model.name,
            "embedding_dim": self.model.dim,
            "episodes": total,
            "solution_vectors": solutions,
            "correct": counts["correct"]["correct"],
            "wrong": counts["correct"]["wrong"],
            "unknown": counts["correct"]["unknown"],
            "by_graph": dict(counts["graph"].most_common()),
            "by_agent": dict(counts["agent"].most_common()),
            "by_model": dict(counts["model"].most_common()),
            "oldest": first.isoformat() if first else None,
            "newest": last.isoformat() if last else None,
        }

    # ------------------------------------------------------------------ async twins

    async def asimilar_solved(self, question: str, k: int = 3) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.similar_solved, question, k)

    async def anovelty(self, text: str, k: int = 5) -> float:
        return await asyncio.to_thread(self.novelty, text, k)

    async def adrop_near_duplicates(self, questions: list[str], threshold: float = 0.95) -> list[int]:
        return await asyncio.to_thread(self.drop_near_duplicates, questions, threshold)

    async def aadd_trajectories(self, trajs: Iterable[Trajectory]) -> int:
        return await asyncio.to_thread(self.add_trajectories, list(trajs))


def _check_text(text: Any, what: str) -> None:
    if not isinstance(text, str):
        raise InputError(f"{what} must be text, got {type(text).__name__}")
    if not text.strip():
        raise InputError(f"{what} is empty")


_OPTIONAL = ("answer", "correct", "reward", "adapter", "trajectory_id")


def _metadata(ep: Episode) -> dict[str, Any]:
    """Chroma metadata values cannot be None: unset optional fields are left out."""
    meta: dict[str, Any] = {
        "version": ep.version, "solution": ep.solution, "graph": ep.graph, "agent": ep.agent,
        "model": ep.model, "created_at": ep.created_at.isoformat(), "created_ts": ep.created_at.timestamp(),
    }
    for key in _OPTIONAL:
        value = getattr(ep, key)
        if value is not None:
            meta[key] = value
    return meta


def _solution_metadata(ep: Episode) -> dict[str, Any]:
    meta: dict[str, Any] = {"created_ts": ep.created_at.timestamp()}
    if ep.correct is not None:
        meta["correct"] = ep.correct
    return meta


def _episode(episode_id: str, document: str | None, meta: dict[str, Any] | None) -> Episode:
    meta = dict(meta or {})
    version = int(meta.pop("version", EPISODE_VERSION))
    meta.pop("created_ts", None)
    created = meta.pop("created_at", None)
    data = {k: meta.get(k) for k in _OPTIONAL}
    if data["reward"] is not None:
        data["reward"] = float(data["reward"])
    data |= {"version": version, "id": episode_id, "question": document or "",
             "solution": meta.get("solution", ""), "graph": meta.get("graph", ""),
             "agent": meta.get("agent", ""), "model": meta.get("model", "")}
    if created:
        data["created_at"] = datetime.fromisoformat(created)
    return validate_episode(data, where=f"stored episode {episode_id}")
