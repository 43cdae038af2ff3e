"""The OpenAI-compatible backend against our own server, started as a real subprocess."""

import asyncio
import json
import subprocess

import pytest
from langchain_core.messages import HumanMessage

from studyhall.errors import BackendError
from studyhall.serving.openai_backend import OpenAIChatModel

from ..conftest import SMOL, free_port, studyhall_cmd, wait_http


def _serve(args: list[str], env_home) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        studyhall_cmd("serve", "--port", str(port), *args),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/health", proc)
    return proc, base


@pytest.fixture
def fake_server(tmp_path):
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"rules": [{"pattern": "2\\+3", "replies": ["2 + 3 = 5\nAnswer: 5"]}],
                                  "default": "Answer: 0"}))
    proc, base = _serve(["--model", f"fake:{script}", "--name", "fake"], tmp_path)
    yield base
    proc.terminate()
    proc.wait(10)


def test_round_trip_n_and_usage(fake_server):
    model = OpenAIChatModel(base_url=f"{fake_server}/v1", model="fake")
    msg = model.invoke([HumanMessage("What is 2+3?")])
    assert msg.content.endswith("Answer: 5")
    assert msg.usage_metadata["input_tokens"] > 0 and msg.usage_metadata["output_tokens"] == 7
    result = model.generate([[HumanMessage("What is 2+3?")]], n=3)
    assert len(result.generations[0]) == 3
    amsg = asyncio.run(model.ainvoke([HumanMessage("hello")]))
    assert amsg.content == "Answer: 0"


def test_streaming(fake_server):
    model = OpenAIChatModel(base_url=f"{fake_server}/v1", model="fake")
    chunks = list(model.stream([HumanMessage("What is 2+3?")]))
    assert "".join(c.content for c in chunks) == "2 + 3 = 5\nAnswer: 5"
    assert len([c for c in chunks if c.content]) > 2


def test_server_rejects_bad_requests(fake_server):
    import httpx

    r = httpx.post(f"{fake_server}/v1/chat/completions", json={"messages": []})
    assert r.status_code == 400 and "messages" in r.json()["error"]["message"]


def test_server_down_is_a_clear_backend_error():
    model = OpenAIChatModel(base_url=f"http://127.0.0.1:{free_port()}/v1", model="x", timeout=5)
    with pytest.raises(BackendError, match="cannot reach the model server"):
        model.invoke([HumanMessage("hi")])


@pytest.mark.slow
def test_real_model_behind_the_server(tmp_path):
    proc, base = _serve(["--model", SMOL, "--name", "smol"], tmp_path)
    try:
        model = OpenAIChatModel(base_url=f"{base}/v1", model="smol", max_tokens=16)
        msg = model.invoke([HumanMessage("What is the capital of France?")])
        assert "Paris" in msg.content
        assert 0 < msg.usage_metadata["output_tokens"] <= 16
    finally:
        proc.terminate()
        proc.wait(10)
