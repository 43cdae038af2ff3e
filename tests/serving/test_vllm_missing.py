"""Without vLLM installed (the main environment), vllm: specs and `serve --backend vllm` say how
to install it; the launcher sets vLLM's variables without overriding the user's."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from studyhall.errors import ModelNotInstalledError

from ..conftest import REPO, SMOL, studyhall_cmd

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is not None,
                                reason="vLLM is installed here; tests/vllm covers it")


def test_vllm_spec_names_the_install_command(settings):
    from studyhall.serving.loader import load_chat_model

    with pytest.raises(ModelNotInstalledError) as err:
        load_chat_model(f"vllm:{SMOL}", settings)
    assert "needs vLLM" in err.value.message
    assert "pip install '.[gpu]'" in err.value.hint and "make vllm-env" in err.value.hint


def test_serve_backend_vllm_without_vllm_is_a_clear_error():
    proc = subprocess.run(studyhall_cmd("serve", "--backend", "vllm", "--model", f"vllm:{SMOL}", "--dry-run"),
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2
    assert "vLLM is not installed in this environment" in proc.stderr and "make vllm-env" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_serve_backend():
    proc = subprocess.run(studyhall_cmd("serve", "--backend", "tgi", "--model", "fake:x.json"),
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 2 and "unknown serve backend 'tgi'" in proc.stderr


def test_launcher_sets_defaults_and_keeps_user_values():
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="5")
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    out = subprocess.run([sys.executable, "-m", "studyhall.serving.vllm_env", "env"], env=env,
                         capture_output=True, text=True, timeout=60, cwd=REPO).stdout
    lines = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert lines["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert lines["VLLM_CPU_KVCACHE_SPACE"] == "5"
    assert lines["HF_HUB_OFFLINE"] == "1"
    bad = subprocess.run([sys.executable, "-m", "studyhall.serving.vllm_env", "no-such-cmd-xyz"],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert bad.returncode == 127 and "command not found" in bad.stderr
