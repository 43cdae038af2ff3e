import json
import os

import numpy as np
import pytest

from studyhall.errors import ConfigError
from studyhall.memory.embeddings import (
    DEFAULT_EMBEDDING_MODEL,
    chroma_embedding,
    packaged_model_path,
    resolve_model,
)


def test_the_packaged_model_resolves_offline_with_its_width_read_from_files():
    model = resolve_model(None)
    assert model.name == DEFAULT_EMBEDDING_MODEL and model.source == str(packaged_model_path())
    assert model.dim == 384
    assert resolve_model("all-MiniLM-L6-v2").source == model.source


def test_encode_gives_unit_vectors_that_put_similar_problems_close():
    model = resolve_model(None)
    v = model.encode(["Tom has 3 apples and buys 5 more. How many apples does he have?",
                      "Tom had 3 apples, then bought 5 more. How many apples now?",
                      "The train leaves Paris at noon."])
    assert v.shape == (3, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > 0.8 > v[0] @ v[2]
    assert model.dim == int(model.load().get_embedding_dimension())
    assert model.encode([]).shape == (0, 384)
    import torch

    before = torch.get_num_threads()
    model.encode(["encoding runs on its own thread count and gives the caller's back"])
    assert torch.get_num_threads() == before


def _variant(tmp_path, name: str, **pooling) -> str:
    """A copy of the packaged model (files linked) with another pooling config."""
    src = packaged_model_path()
    dst = tmp_path / name
    for root, _dirs, files in os.walk(src):
        for f in files:
            target = dst / os.path.relpath(os.path.join(root, f), src)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(os.path.join(root, f))
    cfg_path = dst / "1_Pooling" / "config.json"
    cfg = json.loads(cfg_path.read_text()) | pooling
    cfg_path.unlink()
    cfg_path.write_text(json.dumps(cfg))
    return str(dst)


def test_any_model_folder_by_path_and_its_width_from_the_pooling_config(tmp_path):
    folder = _variant(tmp_path, "mean-max", pooling_mode_max_tokens=True)
    model = resolve_model(folder)
    assert model.name == folder and model.dim == 768
    assert model.encode(["a question"]).shape == (1, 768)


def test_a_folder_that_is_not_a_model_and_an_empty_name_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="not a sentence-transformers model"):
        resolve_model(str(tmp_path))
    with pytest.raises(ConfigError, match="embedding_model is empty"):
        resolve_model("  ")
    with pytest.raises(ConfigError, match="cannot load embedding model"):
        resolve_model("nobody/no-such-model-here").load()


def test_the_chroma_embedding_function_is_registered_and_rebuilds_from_its_config():
    from chromadb.utils.embedding_functions import known_embedding_functions

    ef = chroma_embedding(resolve_model(None))
    assert known_embedding_functions[ef.name()] is type(ef)
    assert not ef.is_legacy() and ef.default_space() == "cosine"
    rebuilt = type(ef).build_from_config(ef.get_config())
    assert rebuilt.model.source == ef.model.source
    assert np.asarray(ef(["hello"])).shape == (1, 384)
