"""The three checkers: what strict accepts, flexible's last number, math-verify in a worker
process with our own deadline (and from threads other than the main one)."""

import threading
import time

import pytest

from studyhall.evals.checkers import (
    Checkers,
    MathVerifyChecker,
    check_flexible,
    check_strict,
    checker_versions,
    strict_extract,
)


@pytest.fixture(scope="module")
def math_verify():
    checker = MathVerifyChecker(timeout=30.0)
    checker.start()
    yield checker
    checker.close()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("48 / 2 = 24\n48 + 24 = 72\n#### 72", "72"),
        ("so she makes\n####1,080", "1080"),
        ("#### $18.00", "18"),
        ("#### -3", "-3"),
        ("Answer: 3/4", "3/4"),
        ("steps...\nAnswer: 2.5", "2.5"),
        ("**Answer:** 42", "42"),
        ("  answer: $1,200.", "1200"),
        ("#### 5\nAnswer: 6", "5"),  # the first marker, as lm-eval's take_first
        ("The answer is 7", None),  # prose is not a marker
        ("\\boxed{7}", None),
        ("My Answer: 7", None),  # Answer: must start a line
        ("Answer: seven", None),
        ("", None),
    ],
)
def test_strict_accepts_only_explicit_markers(text, expected):
    assert strict_extract(text) == expected


def test_strict_and_flexible_disagree_where_they_should():
    text = "She has 3 + 4 = 7 apples, then 7 * 2 = 14."
    assert check_strict(text, "14").correct is False
    flex = check_flexible(text, "14")
    assert flex.correct is True and flex.extracted == "14"
    # numbers compare numerically after normalising
    assert check_strict("#### 1,080.00", "1080").correct
    assert check_flexible("it is -0.50 dollars", "-1/2").correct
    assert not check_flexible("no numbers", "1").correct


def test_math_verify_checks_latex_and_plain_numbers(math_verify):
    assert math_verify.check("So the total is $\\frac{3}{4}$.", "0.75").correct
    assert math_verify.check("Answer: \\boxed{1,080}", "1080").correct
    r = math_verify.check("48 + 24 = 72 clips", "71")
    assert r.correct is False and r.extracted == "72"


def test_math_verify_works_off_the_main_thread(math_verify):
    results = []
    threads = [threading.Thread(target=lambda: results.append(math_verify.check("Answer: 12", "12")))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.correct for r in results] == [True] * 4


def test_a_runaway_check_is_killed_at_our_deadline_and_the_next_one_works():
    # verify(18, 2^2^2^2^30) runs for minutes inside sympy; no signal can stop it in a thread
    checker = MathVerifyChecker(timeout=2.0)
    checker.start()
    try:
        outcome = {}

        def run():
            started = time.perf_counter()
            outcome["result"] = checker.check("The answer is $2^{2^{2^{2^{30}}}}$", "18")
            outcome["seconds"] = time.perf_counter() - started

        t = threading.Thread(target=run)
        t.start()
        t.join(60)
        assert not t.is_alive()
        assert outcome["result"].correct is False and "timed out" in outcome["result"].note
        assert outcome["seconds"] < 10
        assert checker.check("Answer: 18", "18").correct  # a fresh worker took over
    finally:
        checker.close()


def test_all_three_side_by_side_and_versions(math_verify):
    checkers = Checkers()
    checkers.math_verify = math_verify
    got = checkers.check("3 * 4 = 12, so 12 apples", "12")
    assert {k: v.correct for k, v in got.items()} == {"strict": False, "flexible": True, "math_verify": True}
    versions = checker_versions(10.0)
    assert set(versions) == {"strict", "flexible", "math_verify"}
    assert versions["math_verify"].startswith("math-verify 0.9") and "10s deadline" in versions["math_verify"]


def test_a_dead_worker_is_replaced(math_verify):
    math_verify.check("Answer: 1", "1")
    math_verify._proc.kill()  # e.g. the OOM killer
    math_verify._proc.wait()
    assert math_verify.check("Answer: 2", "2").correct
