"""Reward functions score known completions right, in trl's calling convention."""

import pytest

from studyhall.errors import ConfigError
from studyhall.training.config import RewardOptions
from studyhall.training.rewards import answer_format, correctness, novelty_reward, reward_functions


def conv(text):
    return [{"role": "assistant", "content": text}]


COMPLETIONS = [
    "48 / 2 = 24\n48 + 24 = 72\nAnswer: 72",  # right, marked
    "So the total is $1,080.00",  # right (1080), unmarked
    "48 + 48 = 96\nAnswer: 96",  # wrong, marked
    "I am not sure.",  # no answer at all
    "#### 72",  # right, marked the GSM8K way
]
GOLD = ["72", "1080", "72", "72", "72"]


def test_correctness_matches_gold_numerically():
    assert correctness(prompts=[None] * 5, completions=COMPLETIONS, answer=GOLD) == [1.0, 1.0, 0.0, 0.0, 1.0]
    conversational = [conv(c) for c in COMPLETIONS]
    assert correctness(prompts=[None] * 5, completions=conversational, answer=GOLD) == [1.0, 1.0, 0.0, 0.0, 1.0]


def test_format_wants_a_final_answer_line():
    assert answer_format(prompts=[None] * 5, completions=COMPLETIONS) == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert answer_format.__name__ == "format"  # trl logs rewards/format/mean


def test_novelty_takes_any_callable_and_is_clamped():
    seen = {"48 + 48 = 96\nAnswer: 96"}
    fn = novelty_reward(lambda text: 0.0 if text in seen else 1.7)
    assert fn.__name__ == "novelty"
    assert fn(prompts=[None] * 2, completions=[conv(COMPLETIONS[0]), conv(COMPLETIONS[2])]) == [1.0, 0.0]


def test_reward_functions_follow_the_weights():
    funcs, weights = reward_functions(RewardOptions())
    assert [f.__name__ for f in funcs] == ["correctness", "format"] and weights == [1.0, 0.2]
    funcs, weights = reward_functions(RewardOptions(format=0, novelty=0.5), novelty=lambda t: 0.5)
    assert [f.__name__ for f in funcs] == ["correctness", "novelty"] and weights == [1.0, 0.5]
    with pytest.raises(ConfigError, match="needs a novelty function"):
        reward_functions(RewardOptions(novelty=0.5))
    with pytest.raises(ConfigError, match="every reward weight is 0"):
        reward_functions(RewardOptions(correctness=0, format=0))
