"""Reward functions for GRPO and CORY, as plain callables in trl's reward signature:
``fn(prompts, completions, **columns) -> list[float | None]`` (one per completion; the
dataset's ``answer`` column arrives as a keyword). trl logs each under its ``__name__``
(``rewards/correctness/mean``, ``rewards/format/mean``, ``rewards/novelty/mean``).

Correctness goes through :func:`check_answer`, the one place that decides whether a
completion's final answer matches the gold answer (the answer-checking tools today; the
evals checkers can slot in there).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from studyhall.tools.answers import answers_match, extract_answer, extract_marked

RewardFn = Callable[..., list[float | None]]


def completion_text(completion: Any) -> str:
    """trl passes plain strings, or (conversational data) a list of messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    if isinstance(completion, Sequence):
        return "".join(completion_text(m) for m in completion if not isinstance(m, dict) or m.get("role", "assistant") == "assistant")
    return str(completion)


def final_answer(text: str) -> str | None:
    """The answer a completion commits to: its marked answer, else its last number."""
    return extract_answer(text)


def check_answer(text: str, gold: str | None) -> bool:
    """Does the completion's final answer equal the gold answer? (numeric equivalence)"""
    if gold is None:
        return False
    return answers_match(final_answer(text), gold)


def correctness(prompts: list[Any], completions: list[Any], answer: list[str], **_: Any) -> list[float | None]:
    """1.0 when the final answer matches the row's gold ``answer``, else 0.0."""
    return [1.0 if check_answer(completion_text(c), a) else 0.0 for c, a in zip(completions, answer, strict=True)]


def answer_format(prompts: list[Any], completions: list[Any], **_: Any) -> list[float | None]:
    """1.0 when the completion commits to a final answer in the agents' form
    (``Answer: N``, ``#### N``, ``\\boxed{N}``), else 0.0."""
    return [1.0 if extract_marked(completion_text(c)) is not None else 0.0 for c in completions]


answer_format.__name__ = "format"


def novelty_reward(novelty: Callable[[str], float]) -> RewardFn:
    """A bonus in [0, 1] for solutions unlike those in episodic memory: any callable
    ``novelty(text) -> float`` (e.g. ``EpisodicMemory.novelty``)."""

    def novelty_fn(prompts: list[Any], completions: list[Any], **_: Any) -> list[float | None]:
        out: list[float | None] = []
        for c in completions:
            value = float(novelty(completion_text(c)))
            out.append(min(1.0, max(0.0, value)))
        return out

    novelty_fn.__name__ = "novelty"
    return novelty_fn


def reward_functions(
    weights: Any, novelty: Callable[[str], float] | None = None
) -> tuple[list[RewardFn], list[float]]:
    """The reward functions with non-zero weight (``RewardOptions``) and their weights."""
    funcs: list[RewardFn] = []
    ws: list[float] = []
    if weights.correctness > 0:
        funcs.append(correctness)
        ws.append(weights.correctness)
    if weights.format > 0:
        funcs.append(answer_format)
        ws.append(weights.format)
    if weights.novelty > 0:
        if novelty is None:
            from studyhall.errors import ConfigError

            raise ConfigError("rewards.novelty > 0 needs a novelty function (episodic memory)",
                              hint="pass novelty=EpisodicMemory.open(settings).novelty, or set rewards.novelty=0")
        funcs.append(novelty_reward(novelty))
        ws.append(weights.novelty)
    if not funcs:
        from studyhall.errors import ConfigError

        raise ConfigError("every reward weight is 0", hint="set rewards.correctness=1")
    return funcs, ws
