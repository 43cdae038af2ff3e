"""Adapter folders: metadata, the registry, base-model checks, atomic publishing."""

import json
import threading

import pytest

from studyhall.training.adapters import (
    ADAPTER_META,
    AdapterError,
    AdapterMetadata,
    adapter_fingerprint,
    base_info,
    check_adapter_base,
    list_adapters,
    output_dir,
    publish,
    read_metadata,
    registry_dir,
    resolve_adapter,
    write_metadata,
)


def fake_base(folder, hidden=576, weights=b"w" * 4096):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": hidden}))
    (folder / "model.safetensors").write_bytes(weights)
    return folder


def fake_adapter(folder, base, method="sft", tag="1"):
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    (folder / "adapter_model.safetensors").write_bytes(tag.encode() * 64)
    if base is not None:
        write_metadata(folder, AdapterMetadata(name=folder.name, method=method, base=base_info(base, "hf:fake"),
                                               data_hash="abc", data_size=3))
    return folder


def test_metadata_round_trips_with_a_version(tmp_path):
    base = fake_base(tmp_path / "base")
    folder = fake_adapter(tmp_path / "a", base)
    meta = read_metadata(folder)
    assert meta.version == 1 and meta.method == "sft" and meta.base.spec == "hf:fake"
    assert meta.data_hash == "abc" and meta.data_size == 3 and meta.created.tzinfo is not None
    (folder / ADAPTER_META).write_text("{broken")
    with pytest.raises(AdapterError, match="not valid adapter metadata"):
        read_metadata(folder)


def test_resolve_by_path_and_by_registry_name(tmp_path, settings):
    base = fake_base(tmp_path / "base")
    named = fake_adapter(registry_dir(settings) / "math-v1", base)
    loose = fake_adapter(tmp_path / "loose", base)
    assert resolve_adapter("math-v1", settings) == named.resolve()
    assert resolve_adapter(str(loose), settings) == loose.resolve()
    with pytest.raises(AdapterError, match="no adapter 'math-v2'") as err:
        resolve_adapter("math-v2", settings)
    assert "math-v1" in err.value.hint
    not_adapter = tmp_path / "empty"
    not_adapter.mkdir()
    with pytest.raises(AdapterError, match="not a LoRA adapter folder"):
        resolve_adapter(str(not_adapter), settings)


def test_a_pair_folder_points_at_its_roles(tmp_path, settings):
    base = fake_base(tmp_path / "base")
    pair = registry_dir(settings) / "duo"
    fake_adapter(pair / "pioneer", base, "cory")
    fake_adapter(pair / "observer", base, "cory")
    with pytest.raises(AdapterError, match="not a LoRA adapter folder") as err:
        resolve_adapter("duo", settings)
    assert "duo/observer" in err.value.hint
    assert resolve_adapter("duo/pioneer", settings).name == "pioneer"
    assert [n for n, _ in list_adapters(settings)] == ["duo/observer", "duo/pioneer"]


def test_output_dir_is_a_path_or_a_registry_name(tmp_path, settings, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert output_dir("adapters/x", settings) == tmp_path / "adapters" / "x"
    assert output_dir("x", settings) == registry_dir(settings).resolve() / "x"


def test_base_mismatch_is_a_clear_error(tmp_path):
    base = fake_base(tmp_path / "base")
    other_weights = fake_base(tmp_path / "other", weights=b"v" * 4096)
    other_arch = fake_base(tmp_path / "wide", hidden=896)
    folder = fake_adapter(tmp_path / "a", base)
    check_adapter_base(folder, base)
    for other in (other_weights, other_arch):
        with pytest.raises(AdapterError, match=r"was trained on hf:fake, not on") as err:
            check_adapter_base(folder, other)
        assert "--model hf:fake" in err.value.hint
    foreign = fake_adapter(tmp_path / "foreign", None)  # plain peft: no studyhall metadata
    check_adapter_base(foreign, other_arch)  # shapes are checked when the engine loads it


def test_publish_swaps_the_folder_atomically(tmp_path):
    base = fake_base(tmp_path / "base")
    dest = fake_adapter(tmp_path / "reg" / "champ", base, tag="1")
    (dest / "checkpoints").mkdir()
    before = adapter_fingerprint(dest)
    missing: list[str] = []
    reads = 0
    stop = threading.Event()

    def watch():  # a reader opening the adapter's files by path never finds one missing
        nonlocal reads
        while not stop.is_set():
            for name in ("adapter_config.json", "adapter_model.safetensors", ADAPTER_META):
                try:
                    (dest / name).read_bytes()
                    reads += 1
                except FileNotFoundError:
                    missing.append(name)

    t = threading.Thread(target=watch)
    t.start()
    for tag in "23456789":
        staging = fake_adapter(tmp_path / "reg" / f".champ.staging-{tag}", base, tag=tag)
        publish(staging, dest, keep=("checkpoints",))
    stop.set()
    t.join()
    assert (dest / "adapter_model.safetensors").read_bytes() == b"9" * 64
    assert (dest / "checkpoints").is_dir()  # kept across the swap
    assert adapter_fingerprint(dest) != before
    assert reads > 0 and missing == []
    assert sorted(p.name for p in (tmp_path / "reg").iterdir()) == ["champ"]  # no leftovers


def test_publish_without_renameat2_still_replaces(tmp_path, monkeypatch):
    from studyhall.training import adapters

    monkeypatch.setattr(adapters, "_exchange", lambda a, b: False)
    base = fake_base(tmp_path / "base")
    dest = fake_adapter(tmp_path / "reg" / "champ", base, tag="1")
    publish(fake_adapter(tmp_path / "reg" / ".champ.staging-x", base, tag="2"), dest)
    assert (dest / "adapter_model.safetensors").read_bytes() == b"2" * 64
    assert sorted(p.name for p in (tmp_path / "reg").iterdir()) == ["champ"]
