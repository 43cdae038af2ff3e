"""Memory fixtures: every store test runs against an embedded folder and a real
`chroma run` server on 127.0.0.1 (started here, one per session)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ..conftest import free_port, wait_http

CHROMA = str(Path(sys.executable).with_name("chroma"))


class ChromaServer:
    """A `chroma run` subprocess on a free loopback port; restartable on the same folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> ChromaServer:
        env = dict(os.environ, ANONYMIZED_TELEMETRY="False")
        # The server logs every request: to a file, since an unread pipe fills up and stalls it.
        self.log = self.folder.with_name(self.folder.name + ".log")
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                [CHROMA, "run", "--path", str(self.folder), "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )
        try:
            wait_http(f"{self.url}/api/v2/heartbeat", self.proc, timeout=60)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}; server log:\n{self.log.read_text()[-3000:]}") from None
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory):
    if not Path(CHROMA).exists() and not shutil.which("chroma"):
        pytest.fail("the chroma CLI (installed with chromadb) is missing")
    server = ChromaServer(tmp_path_factory.mktemp("chroma-server")).start()
    yield server
    server.stop()


@pytest.fixture(params=["embedded", "server"])
def target(request, tmp_path) -> dict:
    """Where a test's memory lives: open it with ``EpisodicMemory.open(**target)``."""
    if request.param == "embedded":
        return {"path": tmp_path / "memory"}
    server = request.getfixturevalue("chroma_server")
    return {"url": server.url, "collection": f"t-{uuid.uuid4().hex[:12]}"}
