from fractions import Fraction

import pytest

from studyhall.tools.answers import answers_match, extract_answer, normalize_number
from studyhall.tools.calculator import CalculatorError, calculate, check_arithmetic


@pytest.mark.parametrize(("expr", "value"), [
    ("48 / 2 + 3*4", Fraction(36)), ("2**10", Fraction(1024)), ("$1,200 * 5%", Fraction(60)),
    ("(3 - 5) * 2", Fraction(-4)), ("7 // 2", Fraction(3)), ("3 × 4", Fraction(12)), ("10 ÷ 4", Fraction(5, 2)),
])
def test_calculate(expr, value):
    assert calculate(expr) == value


@pytest.mark.parametrize("expr", ["__import__('os')", "2 ** 1000", "1 / 0", "x + 1", "[1] * 3", "9" * 40 + " * 9" * 2])
def test_calculator_refuses_what_is_not_small_arithmetic(expr):
    with pytest.raises(CalculatorError):
        calculate(expr)


def test_check_arithmetic_finds_only_wrong_lines():
    text = "Step 1: 48 / 2 = 24\nStep 2: 48 + 24 = 73\nShe has 5 = 5 apples\n10/3 = 3.33\n3 x 4 = $12"
    [slip] = check_arithmetic(text)
    assert (slip.line, slip.expression, slip.claimed, slip.actual) == (2, "48 + 24", "73", "72")


@pytest.mark.parametrize(("text", "answer"), [
    ("Answer: 72", "72"), ("so #### 1,080", "1080"), ("the answer is $18.00.", "18"), ("\\boxed{3/4}", "3/4"),
    ("x 5 y 7.50", "7.5"), ("nothing", None), ("Answer: -3", "-3"), ("Answer: \\boxed{72}", "72"),
])
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


def test_numbers_compare_by_value():
    assert answers_match("18", "18.0") and answers_match("0.5", "1/2") and not answers_match("3", "4")
    assert normalize_number("1,080.00") == "1080" and normalize_number("abc") is None
