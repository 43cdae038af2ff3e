"""Engine start failures come back as vLLM's own error through the CLI, not as a hang."""

from __future__ import annotations

import os
import subprocess

from ..conftest import SMOL, studyhall_cmd


def test_engine_start_failure_is_surfaced(tmp_path):
    env = dict(os.environ, STUDYHALL_VLLM_KV_CACHE_GB="0.001", STUDYHALL_VLLM_MAX_MODEL_LEN="2048")
    proc = subprocess.run(
        studyhall_cmd("solve", "--model", f"vllm:{SMOL}", "What is 2+2?"),
        capture_output=True, text=True, env=env, timeout=400,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr
    assert "the vLLM engine failed to start" in err
    message = err.split("error:")[-1]
    assert "cache" in message.lower(), err[-2000:]  # vLLM's own words about the KV cache
    assert "STUDYHALL_VLLM" in message and "Traceback" not in message
