"""studyhall: multi-agent reasoning for math word problems.

The public API is imported lazily so ``import studyhall`` (and ``studyhall --help``) stays
instant; the model stack loads on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["asolve", "asolve_many", "build_graph", "load_model", "solve"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from studyhall import api

        return getattr(api, name)
    raise AttributeError(f"module 'studyhall' has no attribute {name!r}")
