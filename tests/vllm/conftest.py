"""The vLLM backend's tests run only where vLLM is installed (.venv-vllm, `make test-vllm`).

Collection rule: when `vllm` cannot be found, every test in this folder is skipped with the
reason below (shown by `pytest -ra`); nothing here imports vllm at module level, so the main
suite collects these files in milliseconds. One engine starts per session (SmolLM2, float32,
LoRA on), shared by every test, because vLLM keeps one engine per process.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from ..conftest import SMOL

HERE = Path(__file__).resolve().parent
VLLM_MISSING = importlib.util.find_spec("vllm") is None
SKIP_REASON = (
    "vLLM is not installed in this environment: the vLLM tests run in .venv-vllm via `make test-vllm`"
)
# Engine options for the session: small KV cache and context, LoRA on, eager.
ENGINE = {"kv_cache_gb": 1.0, "max_model_len": 2048, "enable_lora": True, "max_lora_rank": 16, "max_loras": 4}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not VLLM_MISSING:
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def smol_path() -> str:
    from studyhall.config import load_settings
    from studyhall.serving.vllm_backend import resolve_weights

    return resolve_weights(SMOL, load_settings())


@pytest.fixture(scope="session")
def vllm_smol(smol_path: str):
    """The session's engine: SmolLM2 in float32 (deterministic greedy) with LoRA enabled."""
    from studyhall.config import load_settings
    from studyhall.serving.loader import load_chat_model
    from studyhall.serving.vllm_backend import shutdown_engine

    model = load_chat_model(f"vllm:{SMOL}", load_settings(), dtype="float32", max_tokens=48, **ENGINE)
    model.warm_up()
    yield model
    shutdown_engine()


def make_lora(base: str, out: Path, seed: int, alpha: int = 64) -> Path:
    """A random LoRA adapter for ``base`` made with peft: a plain peft folder (no studyhall
    metadata), which both backends serve."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    cfg = LoraConfig(r=8, lora_alpha=alpha, target_modules=["q_proj", "v_proj", "down_proj"],
                     init_lora_weights=False, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, cfg)
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def lora_dirs(smol_path: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return make_lora(smol_path, root / "pioneer", seed=1), make_lora(smol_path, root / "observer", seed=2)
