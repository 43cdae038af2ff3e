"""Graphs by name. Each graph module has ``DESCRIPTION`` and ``build(model, **options)``;
modules import lazily so listing graphs stays instant."""

from __future__ import annotations

import importlib
from typing import Any

from studyhall.errors import InputError

# name -> (module, one-line description). Descriptions live here too so `studyhall graphs`
# needs no imports of langgraph or the model stack.
GRAPHS: dict[str, tuple[str, str]] = {
    "direct": ("studyhall.graphs.direct", "one student pass with step-by-step reasoning (the baseline)"),
    "solve": ("studyhall.graphs.solve", "LoRID: knowledge -> deep reasoner beside an intuitive one; verifier or retry on disagreement"),
    "vote": ("studyhall.graphs.vote", "self-consistency over k samples, adaptive early stop, verifier-weighted votes"),
    "cory": ("studyhall.graphs.cory", "CORY: pioneer answers, observer answers after reading it; roles swappable"),
    "code": ("studyhall.graphs.code", "tool-integrated reasoning: write Python, run it in the sandbox, fix, answer"),
    "teach": ("studyhall.graphs.teach", "LLM2LLM: student errors -> teacher writes new problems -> keep checked ones"),
    "optimize": ("studyhall.graphs.optimize", "PE2/EduPlanner: evaluator feedback -> optimizer rewrites the prompt, best-first"),
}


def graph_names() -> list[str]:
    return list(GRAPHS)


def describe() -> dict[str, str]:
    return {name: desc for name, (_, desc) in GRAPHS.items()}


def graph_module(name: str) -> Any:
    if name not in GRAPHS:
        raise InputError(f"unknown graph {name!r}", hint="graphs: " + ", ".join(GRAPHS))
    return importlib.import_module(GRAPHS[name][0])


def build_graph(name: str, model: Any, **options: Any) -> Any:
    """Compile graph ``name`` over a chat model; options are the graph's own (k, rounds, ...)."""
    return graph_module(name).build(model, **options)
