"""The loop's plot: dev accuracy of the champion and of each candidate, by iteration."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_history(iterations: list[dict[str, Any]], out: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [it for it in iterations if it["summary"]]
    xs = [it["n"] for it in done]
    nan = float("nan")  # an iteration without a candidate (no training rows) has no score
    champ = [it["summary"].get("champion_accuracy") if it["summary"].get("champion_accuracy") is not None else nan for it in done]
    cand = [it["summary"].get("candidate_accuracy") if it["summary"].get("candidate_accuracy") is not None else nan for it in done]
    promoted = [it["decision"] == "promoted" for it in done]
    fig, ax = plt.subplots(figsize=(7, 4))
    # Markers too: a step line through one point draws nothing (a first iteration alone).
    ax.step(xs, champ, where="mid", color="tab:blue")
    ax.plot(xs, champ, linestyle="none", marker="o", color="tab:blue", label="champion (before the iteration)")
    ax.scatter([x for x, p in zip(xs, promoted, strict=True) if p], [c for c, p in zip(cand, promoted, strict=True) if p],
               marker="^", s=70, color="tab:green", label="candidate, promoted", zorder=3)
    ax.scatter([x for x, p in zip(xs, promoted, strict=True) if not p], [c for c, p in zip(cand, promoted, strict=True) if not p],
               marker="x", s=60, color="tab:red", label="candidate, rejected", zorder=3)
    ax.set_xlabel("iteration")
    ax.set_ylabel("dev accuracy")
    ax.set_title("studyhall self-improvement loop")
    if xs:
        ax.set_xticks(xs)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
