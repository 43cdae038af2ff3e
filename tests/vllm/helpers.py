"""Adapters written directly as peft-format files (numpy + safetensors, no torch or peft), for
tests that need an adapter's shapes rather than a trained one."""

from __future__ import annotations

import json
from pathlib import Path


def fake_adapter(base: str | Path, out: Path, rank: int = 8, targets: tuple[str, ...] = ("q_proj", "v_proj"),
                 seed: int = 0) -> Path:
    """A random LoRA over ``targets`` of every layer of ``base``, shaped for that base model."""
    import numpy as np
    from safetensors.numpy import save_file

    from studyhall.serving.vllm_lora import base_linear_shapes

    rng = np.random.default_rng(seed)
    tensors = {}
    for module, (out_f, in_f) in base_linear_shapes(base).items():
        if module.rsplit(".", 1)[-1] not in targets:
            continue
        prefix = f"base_model.model.model.{module}"
        tensors[f"{prefix}.lora_A.weight"] = rng.normal(0, 0.02, (rank, in_f)).astype(np.float32)
        tensors[f"{prefix}.lora_B.weight"] = rng.normal(0, 0.02, (out_f, rank)).astype(np.float32)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"))
    (out / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": 2 * rank,
        "target_modules": list(targets), "base_model_name_or_path": str(base),
    }))
    return out
