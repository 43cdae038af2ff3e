"""Paired comparison of two systems on the same problems: the exact one-sided sign test
on discordant pairs (McNemar's exact test). Only problems where exactly one system is right
carry information; under "no difference" each such problem favours either system with
probability 1/2."""

from __future__ import annotations

from math import comb

from pydantic import BaseModel


class PairedComparison(BaseModel):
    n: int
    candidate_accuracy: float
    champion_accuracy: float
    candidate_only: int  # candidate right, champion wrong
    champion_only: int
    p_value: float  # P(candidate_only >= observed | no difference), one-sided


def paired_test(candidate: dict[str, bool], champion: dict[str, bool]) -> PairedComparison:
    """Compare on the problem ids both were scored on."""
    ids = sorted(set(candidate) & set(champion))
    if not ids:
        raise ValueError("no problems in common to compare")
    b = sum(1 for i in ids if candidate[i] and not champion[i])
    c = sum(1 for i in ids if champion[i] and not candidate[i])
    n = b + c
    p = sum(comb(n, k) for k in range(b, n + 1)) / 2**n if n else 1.0
    return PairedComparison(
        n=len(ids),
        candidate_accuracy=sum(candidate[i] for i in ids) / len(ids),
        champion_accuracy=sum(champion[i] for i in ids) / len(ids),
        candidate_only=b, champion_only=c, p_value=p,
    )
