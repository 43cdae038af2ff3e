"""Where episodic memory lives: an embedded chroma folder or a chroma server.

``handle_for(path=..., url=...)`` returns the one ``ChromaHandle`` this process keeps for a
location; every EpisodicMemory on it shares it. All chroma calls go through
``handle.session(write=...)``, which makes them safe across threads and processes:

- Server (``HttpClient``, ``url``): the server orders concurrent writers; the session only
  serialises this process's threads on the client.
- Embedded folder (``PersistentClient``, ``path``): chroma's embedded mode keeps its vector
  index in the memory of the process that wrote it, so two processes on one folder would
  each miss the other's writes and overwrite each other's index files. Here every call holds
  an exclusive ``flock`` on ``FOLDER/studyhall.lock``; a writer stamps
  ``FOLDER/studyhall.generation`` with a fresh token before it writes, and a process that
  finds a token it did not write reopens the folder first (chroma rebuilds its index from
  the persisted files and its SQLite write-ahead log). Many processes may share a folder
  this way; many machines, or heavy concurrent writing, want the server.

A process killed mid-write loses at most the call it was in: chroma commits each write to
its SQLite log in one transaction, and the kernel drops the dead process's lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from studyhall.errors import BackendError, ConfigError

LOCK_FILE = "studyhall.lock"
GENERATION_FILE = "studyhall.generation"


def _chroma_settings() -> Any:
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    from chromadb.config import Settings as ChromaSettings

    return ChromaSettings(anonymized_telemetry=False)


class ChromaHandle:
    """A chroma client for one location, shared by the threads of this process."""

    location: str

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._client: Any = None
        self._epoch = 0  # bumped on every (re)open: collection objects of older epochs are stale
        self._collections: dict[str, tuple[int, Any]] = {}

    @contextlib.contextmanager
    def session(self, write: bool = False) -> Iterator[ChromaHandle]:
        with self._lock:
            yield self

    @property
    def client(self) -> Any:
        return self._client

    def collection(self, name: str, embedding_function: Any) -> Any:
        """The named collection (it must exist), cached until the client is reopened."""
        cached = self._collections.get(name)
        if cached and cached[0] == self._epoch:
            return cached[1]
        col = self._client.get_collection(name, embedding_function=embedding_function)
        self._collections[name] = (self._epoch, col)
        return col

    def get_or_create(self, name: str, embedding_function: Any, metadata: dict[str, Any]) -> Any:
        col = self._client.get_or_create_collection(
            name, embedding_function=embedding_function, metadata=metadata,
            configuration={"hnsw": {"space": "cosine"}},
        )
        self._collections[name] = (self._epoch, col)
        return col

    def max_batch_size(self) -> int:
        try:
            return int(self._client.get_max_batch_size())
        except Exception:  # older servers do not say
            return 5000

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                with contextlib.suppress(Exception):
                    closer = getattr(self._client, "close", None)
                    if closer:
                        closer()
            self._client = None
            self._collections.clear()


class EmbeddedHandle(ChromaHandle):
    """A chroma folder opened in this process, kept consistent with other processes."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.location = str(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot use {path} as the memory folder: {exc.strerror}",
                              hint="set home (or pass --path) to a writable folder") from None
        self._depth = 0
        self._seen: str | None = None  # the generation token our open client reflects

    def _token(self) -> str:
        try:
            return (self.path / GENERATION_FILE).read_text()
        except FileNotFoundError:
            return ""

    def _stamp(self) -> None:
        token = uuid.uuid4().hex
        tmp = self.path / f"{GENERATION_FILE}.{os.getpid()}.{threading.get_ident()}"
        tmp.write_text(token)
        os.replace(tmp, self.path / GENERATION_FILE)
        self._seen = token

    def _open(self) -> None:
        import chromadb

        self.close()
        try:
            self._client = chromadb.PersistentClient(path=str(self.path), settings=_chroma_settings())
        except Exception as exc:
            raise BackendError(f"cannot open the memory folder {self.path}: {exc}",
                               hint="is it a chroma folder written by a compatible chromadb?") from None
        self._epoch += 1

    @contextlib.contextmanager
    def session(self, write: bool = False) -> Iterator[ChromaHandle]:
        with self._lock:
            outer = self._depth == 0
            if outer:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            self._depth += 1
            try:
                if outer:
                    token = self._token()
                    if self._client is None or token != self._seen:
                        self._open()
                        self._seen = token
                if write:  # before writing: a crash mid-write still tells the others to reopen
                    self._stamp()
                yield self
            finally:
                self._depth -= 1
                if outer:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)


class HttpHandle(ChromaHandle):
    """A client of a ``chroma run`` server."""

    def __init__(self, url: str) -> None:
        super().__init__()
        parsed = urlparse(url if "://" in url else f"http://{url}")
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ConfigError(f"memory_url {url!r} is not an http(s) URL",
                              hint="e.g. http://127.0.0.1:8000 (a `chroma run` server)")
        self.location = url
        self.host = parsed.hostname
        self.port = parsed.port or (443 if parsed.scheme == "https" else 8000)
        self.ssl = parsed.scheme == "https"

    @contextlib.contextmanager
    def session(self, write: bool = False) -> Iterator[ChromaHandle]:
        import httpx

        with self._lock:
            if self._client is None:
                self._connect()
            try:
                yield self
            except httpx.TransportError as exc:  # the server went away mid-call
                raise BackendError(f"lost the chroma server at {self.location}: {exc}",
                                   hint="is `chroma run` still up? the call may not have been written") from None

    def _connect(self) -> None:
        import chromadb

        try:
            self._client = chromadb.HttpClient(host=self.host, port=self.port, ssl=self.ssl,
                                               settings=_chroma_settings())
            self._client.heartbeat()
        except Exception as exc:
            self._client = None
            raise BackendError(f"cannot reach the chroma server at {self.location}: {str(exc).splitlines()[0]}",
                               hint="start one with `chroma run --path FOLDER --host 127.0.0.1 --port PORT`, "
                               "or unset memory_url to use the embedded folder") from None
        self._epoch += 1


_handles: dict[str, ChromaHandle] = {}
_handles_lock = threading.Lock()


def handle_for(*, path: str | Path | None = None, url: str | None = None) -> ChromaHandle:
    """This process's handle for a folder or a server URL (exactly one of them)."""
    if (path is None) == (url is None):
        raise ValueError("give exactly one of path and url")
    key = f"url:{url}" if url is not None else f"path:{Path(path).expanduser().absolute()}"
    with _handles_lock:
        handle = _handles.get(key)
        if handle is None:
            handle = HttpHandle(url) if url is not None else EmbeddedHandle(Path(path).expanduser().absolute())
            _handles[key] = handle
        return handle
