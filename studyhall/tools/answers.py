"""Final-answer extraction and numeric equivalence for GSM8K-style answers.

Agents end with ``Answer: N``; models also write ``#### N``, ``\\boxed{N}`` or
"the answer is N". Numbers are normalised (commas, currency, units, trailing zeros) so
"$1,080.00" and "1080" compare equal.
"""

from __future__ import annotations

import re
from fractions import Fraction

_NUM = r"-?\$?\s*-?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?|-?\$?\.\d+"
NUMBER_RE = re.compile(_NUM)
_MARKERS = [
    re.compile(r"answer\s*(?:is)?\s*[:=]\s*\**\s*(" + _NUM + ")", re.I),
    re.compile(r"####\s*\**\s*(" + _NUM + ")"),
    re.compile(r"\\boxed\{\s*(" + _NUM + r")\s*\}"),
    re.compile(r"(?:final answer|the answer)\s*(?:is|=|:)?\s*\**\s*(" + _NUM + ")", re.I),
]


def normalize_number(text: str | None) -> str | None:
    """Canonical string for a number ("1,080.00" -> "1080", "3/4" -> "3/4", "-0.50" -> "-0.5")."""
    if text is None:
        return None
    s = str(text).strip().replace(",", "").replace("$", "").replace(" ", "")
    s = s.rstrip(".")
    if not s:
        return None
    try:
        if "/" in s:
            num, den = s.split("/", 1)
            value = Fraction(Fraction(num), Fraction(den))
        else:
            value = Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None
    if value.denominator == 1:
        return str(value.numerator)
    if "/" in s:
        return f"{value.numerator}/{value.denominator}"
    return format(float(value), ".10g") if "e" not in format(float(value), ".10g") else s


def to_fraction(text: str | None) -> Fraction | None:
    norm = normalize_number(text)
    if norm is None:
        return None
    try:
        return Fraction(norm)
    except ValueError:
        return None


def extract_marked(text: str) -> str | None:
    """The number after an explicit answer marker (Answer:, ####, \\boxed, "the answer is"); last one wins."""
    for pattern in _MARKERS:
        found = pattern.findall(text or "")
        if found:
            return normalize_number(found[-1])
    return None


def last_number(text: str) -> str | None:
    found = NUMBER_RE.findall(text or "")
    for candidate in reversed(found):
        norm = normalize_number(candidate)
        if norm is not None:
            return norm
    return None


def extract_answer(text: str) -> str | None:
    """Marked answer if any, else the last number in the text."""
    return extract_marked(text) or last_number(text)


def answers_match(a: str | None, b: str | None, rel_tol: float = 1e-6) -> bool:
    fa, fb = to_fraction(a), to_fraction(b)
    if fa is None or fb is None:
        return False
    if fa == fb:
        return True
    scale = max(abs(fa), abs(fb), Fraction(1))
    return abs(fa - fb) <= scale * Fraction(rel_tol)
