"""Loop state in SQLite (iterations, finished steps, champion changes) and the champion
pointer file that serving reads. The pointer is switched atomically (write temp, fsync,
rename), so readers see the old champion or the new one, never half of either."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

_SCHEMA = """
CREATE TABLE IF NOT EXISTS iterations (
    n INTEGER PRIMARY KEY, status TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT,
    decision TEXT, reason TEXT, summary TEXT
);
CREATE TABLE IF NOT EXISTS steps (
    n INTEGER NOT NULL, step TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT NOT NULL,
    result TEXT NOT NULL, PRIMARY KEY (n, step)
);
CREATE TABLE IF NOT EXISTS champions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER NOT NULL, adapter TEXT, dev_accuracy REAL,
    at TEXT NOT NULL, note TEXT
);
"""
POINTER = "champion.json"


def now() -> str:
    return datetime.now(UTC).isoformat()


class Champion(BaseModel):
    version: int = 1
    adapter: str | None  # None: the base model
    iteration: int
    dev_accuracy: float | None = None
    at: str


class LoopState:
    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(self.dir / "loop.sqlite"), check_same_thread=False, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._conn.close()

    def _exec(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock, self._conn:
            return self._conn.execute(sql, args).fetchall()

    # iterations ---------------------------------------------------------------
    def open_iteration(self) -> int:
        """The unfinished iteration if any (resume it), else a new one."""
        rows = self._exec("SELECT n FROM iterations WHERE status = 'running' ORDER BY n LIMIT 1")
        if rows:
            return rows[0][0]
        last = self._exec("SELECT COALESCE(MAX(n), 0) FROM iterations")[0][0]
        self._exec("INSERT INTO iterations (n, status, started_at) VALUES (?, 'running', ?)", (last + 1, now()))
        return last + 1

    def finish_iteration(self, n: int, decision: str, reason: str, summary: dict[str, Any]) -> None:
        self._exec(
            "UPDATE iterations SET status='done', finished_at=?, decision=?, reason=?, summary=? WHERE n=?",
            (now(), decision, reason, json.dumps(summary), n),
        )

    def iterations(self) -> list[dict[str, Any]]:
        rows = self._exec("SELECT n, status, started_at, finished_at, decision, reason, summary FROM iterations ORDER BY n")
        return [
            {"n": r[0], "status": r[1], "started_at": r[2], "finished_at": r[3], "decision": r[4],
             "reason": r[5], "summary": json.loads(r[6]) if r[6] else {}}
            for r in rows
        ]

    def last_start(self) -> datetime | None:
        rows = self._exec("SELECT MAX(started_at) FROM iterations")
        return datetime.fromisoformat(rows[0][0]) if rows and rows[0][0] else None

    # steps --------------------------------------------------------------------
    def step_result(self, n: int, step: str) -> dict[str, Any] | None:
        rows = self._exec("SELECT result FROM steps WHERE n=? AND step=?", (n, step))
        return json.loads(rows[0][0]) if rows else None

    def save_step(self, n: int, step: str, started_at: str, result: dict[str, Any]) -> None:
        self._exec("INSERT OR REPLACE INTO steps VALUES (?,?,?,?,?)", (n, step, started_at, now(), json.dumps(result)))

    def steps(self, n: int) -> dict[str, dict[str, Any]]:
        rows = self._exec("SELECT step, started_at, finished_at, result FROM steps WHERE n=?", (n,))
        return {r[0]: {"started_at": r[1], "finished_at": r[2], "result": json.loads(r[3])} for r in rows}

    # champion -----------------------------------------------------------------
    def champion(self) -> Champion | None:
        return read_champion(self.dir)

    def set_champion(self, champion: Champion, note: str) -> None:
        """Log, then switch the pointer atomically (a crash between the two re-does the switch)."""
        self._exec("INSERT INTO champions (n, adapter, dev_accuracy, at, note) VALUES (?,?,?,?,?)",
                   (champion.iteration, champion.adapter, champion.dev_accuracy, champion.at, note))
        write_pointer(self.dir, champion)

    def champion_log(self) -> list[dict[str, Any]]:
        rows = self._exec("SELECT seq, n, adapter, dev_accuracy, at, note FROM champions ORDER BY seq")
        return [dict(zip(("seq", "n", "adapter", "dev_accuracy", "at", "note"), r, strict=True)) for r in rows]


def write_pointer(state_dir: Path, champion: Champion) -> None:
    path = Path(state_dir) / POINTER
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write(champion.model_dump_json(indent=1))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(str(state_dir), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_champion(state_dir: Path) -> Champion | None:
    """The current champion from the pointer file (None before the first promotion)."""
    try:
        return Champion.model_validate_json((Path(state_dir) / POINTER).read_text())
    except (OSError, ValueError):
        return None
