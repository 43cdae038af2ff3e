"""LoRA adapter folders: what they hold, where named ones live, and how a new one is published.

An adapter folder is what ``peft`` writes (``adapter_config.json`` +
``adapter_model.safetensors``, loadable by the transformers backend and by vLLM's
``LoRARequest`` as is) plus ``studyhall-adapter.json``: the base model it was trained on,
the method, the data's hash and size, the config, metrics, the parent adapter, and when.

Named adapters live in a registry folder, ``settings.home / "adapters" / NAME``. A new
adapter is written to a staging folder beside its destination, verified, and then swapped
into place atomically (``renameat2(RENAME_EXCHANGE)`` on Linux), so a server that reloads
the folder sees the old adapter or the new one, never half of one — the self-improvement
loop promotes champions this way.

Nothing heavy is imported here: the serving engine and the CLI use these helpers too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import os
import shutil
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from studyhall.errors import InputError
from studyhall.records import utcnow

ADAPTER_META = "studyhall-adapter.json"
ADAPTER_META_VERSION = 1
PEFT_CONFIG = "adapter_config.json"
# Architecture fields that must match for LoRA weights to fit a base model at all.
_ARCH_FIELDS = (
    "model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "vocab_size",
)


class AdapterError(InputError):
    """An adapter folder is missing, malformed, or made for another base model."""


class BaseModelInfo(BaseModel):
    """Which base model an adapter belongs to. ``weights_id`` tells fine-tunes of one
    architecture apart; ``arch_id`` is what LoRA shapes depend on."""

    spec: str | None = Field(None, description="The model spec trained on, e.g. packaged:smollm2-135m-instruct.")
    path: str = Field(description="The local weights folder it was loaded from (on the training machine).")
    arch_id: str = Field(description="sha256 of the architecture fields of config.json.")
    weights_id: str = Field(description="sha256 of the weights files' sizes and sampled bytes.")


class AdapterMetadata(BaseModel):
    """``studyhall-adapter.json``: where an adapter came from and how it did."""

    version: int = ADAPTER_META_VERSION
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    name: str = Field(description="The folder name (the registry name for registered adapters).")
    method: str = Field(description="sft | dpo | grpo | cory")
    role: str | None = Field(None, description="For CORY: pioneer or observer.")
    base: BaseModelInfo
    data_hash: str = Field(description="sha256 of the training rows (see training.datasets).")
    data_size: int = Field(description="Training rows (examples, pairs or prompts).")
    config: dict[str, Any] = Field(default_factory=dict, description="The training config, as run.")
    metrics: dict[str, Any] = Field(default_factory=dict)
    parent: str | None = Field(None, description="The adapter training started from, if any.")
    parent_id: str | None = None
    created: datetime = Field(default_factory=utcnow)
    extra: dict[str, Any] = Field(default_factory=dict)


# ---------------------------------------------------------------------------- base model identity
def arch_id(model_path: str | Path) -> str:
    config = json.loads((Path(model_path) / "config.json").read_text())
    text = config.get("text_config") or config
    picked = {k: text.get(k) for k in _ARCH_FIELDS}
    return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:16]


def weights_id(model_path: str | Path, sample: int = 1 << 20) -> str:
    """Cheap identity of a weights folder: every weights file's name and size, and 1 MiB from
    its start, middle and end. Reads ~3 MiB per file, whatever the model size."""
    h = hashlib.sha256()
    files = sorted(Path(model_path).glob("*.safetensors")) or sorted(Path(model_path).glob("*.bin"))
    if not files:
        raise AdapterError(f"{model_path} holds no weights (*.safetensors or *.bin)")
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with open(f, "rb") as fh:
            for offset in sorted({0, max(0, size // 2 - sample // 2), max(0, size - sample)}):
                fh.seek(offset)
                h.update(fh.read(sample))
    return h.hexdigest()[:16]


_base_cache: dict[tuple[str, int], BaseModelInfo] = {}


def base_info(model_path: str | Path, spec: str | None = None) -> BaseModelInfo:
    path = str(Path(model_path).resolve())
    key = (path, Path(path, "config.json").stat().st_mtime_ns)
    if key not in _base_cache:
        _base_cache[key] = BaseModelInfo(spec=spec, path=path, arch_id=arch_id(path), weights_id=weights_id(path))
    info = _base_cache[key]
    return info.model_copy(update={"spec": spec or info.spec})


# ---------------------------------------------------------------------------- reading adapters
def read_metadata(adapter_path: str | Path) -> AdapterMetadata | None:
    """The studyhall metadata of an adapter folder, or None for a foreign (plain peft) one."""
    f = Path(adapter_path) / ADAPTER_META
    if not f.exists():
        return None
    try:
        return AdapterMetadata.model_validate_json(f.read_text())
    except (ValidationError, ValueError) as exc:
        raise AdapterError(f"{f} is not valid adapter metadata: {str(exc).splitlines()[0]}") from None


def check_adapter_folder(adapter_path: str | Path) -> Path:
    path = Path(adapter_path)
    if not path.is_dir():
        raise AdapterError(f"adapter folder {path} does not exist")
    if not (path / PEFT_CONFIG).exists():
        roles = [p.name for p in path.iterdir() if (p / PEFT_CONFIG).exists()] if path.is_dir() else []
        hint = (f"it holds the adapters {', '.join(sorted(roles))}: use {path}/{roles[0]}" if roles
                else "an adapter folder holds adapter_config.json and adapter_model.safetensors")
        raise AdapterError(f"{path} is not a LoRA adapter folder (no {PEFT_CONFIG})", hint=hint)
    return path


def check_adapter_base(adapter_path: str | Path, model_path: str | Path, model_spec: str | None = None) -> None:
    """Raise AdapterError when the adapter was trained on another base model than ``model_path``."""
    path = check_adapter_folder(adapter_path)
    meta = read_metadata(path)
    if meta is not None:
        mine = base_info(model_path, model_spec)
        if meta.base.arch_id != mine.arch_id or meta.base.weights_id != mine.weights_id:
            raise AdapterError(
                f"adapter {path} was trained on {meta.base.spec or meta.base.path}, "
                f"not on {model_spec or mine.path}",
                hint=f"serve it with --model {meta.base.spec}" if meta.base.spec else
                "load the base model the adapter was trained on",
            )
        return
    # A plain peft adapter: its config names the base; shapes are checked when peft loads it.
    try:
        config = json.loads((path / PEFT_CONFIG).read_text())
    except ValueError as exc:
        raise AdapterError(f"{path / PEFT_CONFIG} is not valid JSON: {exc}") from None
    if config.get("peft_type", "LORA") != "LORA":
        raise AdapterError(f"{path} is a {config.get('peft_type')} adapter; only LoRA adapters are served")


def adapter_fingerprint(adapter_path: str | Path) -> str:
    """Changes whenever the folder's files are replaced (a new champion swapped in)."""
    path = Path(adapter_path)
    parts = []
    for name in (PEFT_CONFIG, "adapter_model.safetensors", "adapter_model.bin", ADAPTER_META):
        try:
            st = (path / name).stat()
        except FileNotFoundError:
            continue
        parts.append(f"{name}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- the registry
def registry_dir(settings: Any = None) -> Path:
    if settings is None:
        from studyhall.config import load_settings

        settings = load_settings()
    return Path(settings.home) / "adapters"


def resolve_adapter(name_or_path: str | Path, settings: Any = None, *, registry: str | Path | None = None) -> Path:
    """An adapter folder from a path, or from a NAME (or NAME/ROLE) in the registry
    (``registry``, else ``settings.home / "adapters"``)."""
    text = str(name_or_path).strip()
    if not text:
        raise AdapterError("the adapter name is empty")
    candidate = Path(text).expanduser()
    if candidate.is_dir():
        return check_adapter_folder(candidate).resolve()
    registry = Path(registry) if registry is not None else registry_dir(settings)
    named = registry / text
    if named.is_dir():
        return check_adapter_folder(named).resolve()
    known = sorted(name for name, _ in list_adapters(registry=registry))
    raise AdapterError(
        f"no adapter {text!r}: not a folder, and not a name in {registry}",
        hint=("registered adapters: " + ", ".join(known)) if known else
        "train one with `studyhall train sft --data TRAJ.jsonl --out NAME`",
    )


def list_adapters(settings: Any = None, *, registry: str | Path | None = None) -> list[tuple[str, AdapterMetadata | None]]:
    """Registered adapters (and CORY pairs' roles as NAME/ROLE), with their metadata."""
    registry = Path(registry) if registry is not None else registry_dir(settings)
    out: list[tuple[str, AdapterMetadata | None]] = []
    if not registry.is_dir():
        return out
    for folder in sorted(registry.iterdir()):
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        if (folder / PEFT_CONFIG).exists():
            out.append((folder.name, _safe_meta(folder)))
        for sub in sorted(folder.iterdir()):
            if sub.is_dir() and (sub / PEFT_CONFIG).exists():
                out.append((f"{folder.name}/{sub.name}", _safe_meta(sub)))
    return out


def _safe_meta(path: Path) -> AdapterMetadata | None:
    try:
        return read_metadata(path)
    except AdapterError:
        return None


def output_dir(out: str | Path, settings: Any = None) -> Path:
    """``--out``: a path (anything with a slash, or absolute), or a bare NAME in the registry."""
    text = str(out)
    if os.sep in text or text.startswith("."):
        return Path(text).expanduser().resolve()
    return (registry_dir(settings) / text).resolve()


# ---------------------------------------------------------------------------- publishing
def write_metadata(folder: str | Path, meta: AdapterMetadata) -> None:
    Path(folder, ADAPTER_META).write_text(meta.model_dump_json(indent=2) + "\n")


def staging_dir(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.staging-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def clean_stale_staging(dest: Path) -> None:
    """Staging folders left by a run killed while publishing."""
    if dest.parent.is_dir():
        for p in dest.parent.glob(f".{dest.name}.staging-*"):
            shutil.rmtree(p, ignore_errors=True)


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2). False when the platform cannot."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    at_fdcwd = -100
    rc = fn(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), _RENAME_EXCHANGE)
    return rc == 0


def publish(staging: Path, dest: Path, keep: tuple[str, ...] = ()) -> None:
    """Make ``staging`` the folder at ``dest``: a rename, or an atomic swap with the folder
    already there (whose entries named in ``keep`` are moved over first)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists():
        os.rename(staging, dest)
        return
    for name in keep:
        if (dest / name).exists() and not (staging / name).exists():
            os.rename(dest / name, staging / name)
    if _exchange(staging, dest):
        shutil.rmtree(staging, ignore_errors=True)  # staging now holds the old folder
        return
    old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:6]}"  # two renames: a short gap
    os.rename(dest, old)
    os.rename(staging, dest)
    shutil.rmtree(old, ignore_errors=True)
