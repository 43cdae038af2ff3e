"""A SQLite checkpointer that works from sync and async code, in any event loop.

LangGraph's AsyncSqliteSaver is bound to the loop it was created in, and SqliteSaver has no
async methods. This subclass runs SqliteSaver's (thread-safe, locked) methods in worker
threads, so one saver serves ``invoke``, ``ainvoke`` and ``abatch`` alike. WAL mode and a
busy timeout let several processes (chat, eval, loop) share one database.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.sqlite import SqliteSaver


class ThreadedSqliteSaver(SqliteSaver):
    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        items = await asyncio.to_thread(
            lambda: list(self.list(config, filter=filter, before=before, limit=limit))
        )
        for item in items:
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def aget_delta_channel_history(self, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self.get_delta_channel_history, *args, **kwargs)

    def close(self) -> None:
        self.conn.close()

    def thread_ids(self) -> list[str]:
        """Thread ids with checkpoints, most recent first."""
        self.setup()
        with self.lock:
            rows = self.conn.execute(
                "SELECT thread_id, MAX(rowid) AS last FROM checkpoints GROUP BY thread_id ORDER BY last DESC"
            ).fetchall()
        return [r[0] for r in rows]


def open_checkpointer(path: str | Path) -> ThreadedSqliteSaver:
    """A saver on a SQLite file (created with its folder), or ``:memory:``."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=30000")
    saver = ThreadedSqliteSaver(conn)
    saver.setup()
    return saver
