"""The trajectory store: every graph run, kept in SQLite, exported and imported as JSONL.

Training reads from here (not from live objects) so the loop can crash and resume at any
step. Writes are upserts keyed by trajectory id, so storing a run twice keeps one copy.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from studyhall.errors import InputError
from studyhall.records import Trajectory

_SCHEMA = """
CREATE TABLE IF NOT EXISTS trajectories (
    id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    graph TEXT NOT NULL,
    model TEXT NOT NULL,
    adapter TEXT,
    question TEXT NOT NULL,
    final_answer TEXT,
    gold_answer TEXT,
    correct INTEGER,
    source TEXT,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS trajectories_created ON trajectories(created_at);
CREATE INDEX IF NOT EXISTS trajectories_source ON trajectories(source);
"""


class TrajectoryStore:
    """SQLite-backed; safe to share between threads and processes (WAL, busy timeout)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA busy_timeout=30000")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> TrajectoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def put(self, trajectories: Trajectory | Iterable[Trajectory], source: str | None = None) -> int:
        """Insert or replace; returns how many were written. One transaction per call."""
        items = [trajectories] if isinstance(trajectories, Trajectory) else list(trajectories)
        rows = [
            (
                t.id, t.created_at.isoformat(), t.graph, t.model, t.adapter, t.question,
                t.final_answer, t.gold_answer, None if t.correct is None else int(t.correct),
                source or t.metadata.get("source"), t.model_dump_json(),
            )
            for t in items
        ]
        with self._lock, self._conn:
            self._conn.executemany(
                "INSERT OR REPLACE INTO trajectories VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows
            )
        return len(rows)

    def get(self, trajectory_id: str) -> Trajectory | None:
        with self._lock:
            row = self._conn.execute("SELECT body FROM trajectories WHERE id = ?", (trajectory_id,)).fetchone()
        return Trajectory.model_validate_json(row[0]) if row else None

    def query(
        self,
        *,
        graph: str | None = None,
        correct: bool | None = None,
        source: str | None = None,
        since: str | None = None,
        limit: int | None = None,
    ) -> Iterator[Trajectory]:
        """Trajectories in insertion-time order, filtered."""
        where, args = [], []
        for column, value in (("graph", graph), ("source", source)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if correct is not None:
            where.append("correct = ?")
            args.append(int(correct))
        if since is not None:
            where.append("created_at >= ?")
            args.append(since)
        sql = "SELECT body FROM trajectories"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at, id"
        if limit:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        for (body,) in rows:
            yield Trajectory.model_validate_json(body)

    def count(self, **filters: Any) -> int:
        return sum(1 for _ in self.query(**filters))

    def export_jsonl(self, path: str | Path, **filters: Any) -> int:
        n = 0
        with open(path, "w", encoding="utf-8") as f:
            for t in self.query(**filters):
                f.write(t.model_dump_json() + "\n")
                n += 1
        return n

    def import_jsonl(self, path: str | Path, source: str | None = None) -> int:
        return self.put(read_trajectories(path), source=source)


def read_trajectories(path: str | Path) -> list[Trajectory]:
    """Parse a trajectories JSONL file; a bad row is an InputError naming its line."""
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(Trajectory.model_validate(json.loads(line)))
            except (ValueError, ValidationError) as exc:
                raise InputError(f"{path} line {lineno}: not a trajectory: {str(exc).splitlines()[0]}") from None
    return out
