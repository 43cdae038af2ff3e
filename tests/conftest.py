"""Shared fixtures. Everything runs offline; state goes to a temporary home per test."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("STUDYHALL_CONFIG", "/nonexistent/studyhall.toml")

REPO = Path(__file__).resolve().parents[1]
SMOL = "packaged:smollm2-135m-instruct"
QWEN = "packaged:qwen2.5-coder-0.5b-instruct"
NATALIA = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
    "in May. How many clips did Natalia sell altogether in April and May?"
)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("STUDYHALL_HOME", str(home))
    monkeypatch.setenv("STUDYHALL_CONFIG", str(tmp_path / "studyhall.toml"))
    return home


@pytest.fixture
def settings():
    from studyhall.config import load_settings

    return load_settings()


@pytest.fixture(scope="session")
def smol():
    """SmolLM2 in float32 (deterministic greedy), shared by the whole session."""
    from studyhall.serving.loader import load_chat_model

    model = load_chat_model(SMOL, dtype="float32", max_tokens=64)
    model.warm_up()
    return model


@pytest.fixture(scope="session")
def qwen():
    from studyhall.serving.loader import load_chat_model

    model = load_chat_model(QWEN)
    model.warm_up()
    return model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise RuntimeError(f"server exited with {proc.returncode}: {out}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not come up")


def studyhall_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "studyhall", *args]
