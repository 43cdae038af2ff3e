"""`studyhall serve --backend vllm`: vLLM's own OpenAI server on 127.0.0.1, used through the
openai: backend the way several studyhall processes share it (base model and an adapter)."""

from __future__ import annotations

import asyncio
import os
import subprocess

import httpx
import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from studyhall.serving.openai_backend import OpenAIChatModel

from ..conftest import SMOL, free_port, studyhall_cmd, wait_http
from .conftest import ENGINE

QUESTION = [SystemMessage("You are a helpful assistant."), HumanMessage("Write one sentence about the sea.")]


@pytest.fixture(scope="module")
def vllm_server(lora_dirs):
    pioneer = lora_dirs[0]
    port = free_port()
    env = dict(os.environ, STUDYHALL_DTYPE="float32",
               **{f"STUDYHALL_VLLM_{k.upper()}": str(v) for k, v in ENGINE.items()})
    proc = subprocess.Popen(
        studyhall_cmd("serve", "--backend", "vllm", "--model", f"vllm:{SMOL}", "--name", "smol",
                      "--adapter", f"pioneer={pioneer}", "--port", str(port)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/health", proc, timeout=600)
        yield f"{base}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_models_are_listed(vllm_server):
    ids = {m["id"] for m in httpx.get(f"{vllm_server}/models", timeout=10).json()["data"]}
    assert {"smol", "pioneer"} <= ids


def test_round_trip_matches_the_in_process_engine(vllm_server, vllm_smol, lora_dirs):
    client = OpenAIChatModel(base_url=vllm_server, model="smol", max_tokens=24)
    base = client.invoke(QUESTION, temperature=0.0)
    assert base.usage_metadata["output_tokens"] > 0 and base.usage_metadata["input_tokens"] > 10
    assert base.content == vllm_smol.invoke(QUESTION, temperature=0.0, max_tokens=24).content
    tuned = client.invoke(QUESTION, temperature=0.0, adapter="pioneer")
    assert tuned.content != base.content
    assert tuned.content == vllm_smol.invoke(QUESTION, temperature=0.0, max_tokens=24,
                                             adapter=str(lora_dirs[0])).content
    samples = client.generate([QUESTION], n=3, temperature=1.0, seed=3)
    assert len(samples.generations[0]) == 3


def test_concurrent_mixed_requests(vllm_server):
    """8 requests at once, base and adapter interleaved: base answers stay base."""
    client = OpenAIChatModel(base_url=vllm_server, model="smol", max_tokens=16)
    alone = client.invoke(QUESTION, temperature=0.0).content

    async def many() -> list[str]:
        msgs = await asyncio.gather(*(
            client.ainvoke(QUESTION, temperature=0.0, **({"adapter": "pioneer"} if i % 2 else {}))
            for i in range(8)
        ))
        return [m.content for m in msgs]

    got = asyncio.run(many())
    assert all(got[i] == alone for i in range(0, 8, 2)), got
    assert all(got[i] != alone for i in range(1, 8, 2)), got
