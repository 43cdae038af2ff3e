"""Metrics from rows: pass@k's unbiased estimator, maj@k over graphs that sample, tokens,
latency percentiles, throughput. Sampling graphs land later, so their contract
(trajectory.metadata["samples"] = list of answers) is tested with hand-made Trajectories."""

import math

import pytest

from studyhall.evals.checkers import Checkers
from studyhall.evals.datasets import Problem
from studyhall.evals.harness import make_row
from studyhall.evals.metrics import majority, pass_at_k, percentile, results, sample_answers, timing
from studyhall.evals.records import EvalRow, Session
from studyhall.records import AgentStep, Trajectory


@pytest.fixture(scope="module")
def checkers():
    with Checkers() as c:
        yield c


def test_pass_at_k_matches_the_combinatorial_definition():
    for n, c, k in [(10, 3, 1), (10, 3, 5), (8, 0, 4), (8, 8, 2), (5, 2, 5), (20, 1, 10)]:
        exact = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert pass_at_k(n, c, k) == pytest.approx(exact)
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_majority_pools_equal_numbers_and_breaks_ties_by_first_seen():
    assert majority(["7", "7.0", "8", "8", None, "$7"]) == "7"  # "7.0" and "$7" count as 7
    assert majority(["5", "6", "6", "5"]) == "5"
    assert majority([None, None]) is None
    assert sample_answers([7, "1,080", None, {"answer": "3/4"}]) == ["7", "1080", None, "3/4"]


def _traj(samples, final, steps=1, error=None):
    return Trajectory(
        question="q", graph="vote", model="fake", final_answer=final,
        solution=f"Answer: {final}" if final else None, error=error,
        steps=[AgentStep(role="student", node="student", prompt_tokens=10, completion_tokens=5, sample=i)
               for i in range(steps)],
        metadata={"samples": samples} if samples is not None else {},
    )


def test_maj_and_pass_at_k_from_trajectories_that_sample(checkers):
    p = Problem(id="p", question="q", answer="7")
    trajs = [
        _traj(["7", "7", "8", "9"], "7", steps=4),  # majority right, 2 of 4 right
        _traj(["8", "8", "7", "9"], "8", steps=4),  # majority wrong, 1 of 4 right
        _traj(["1", "2", "3", "4"], "1", steps=4),  # none right
        _traj(None, None, steps=0, error="BackendError: down"),  # failed before sampling
    ]
    rows = [make_row(t, p, i, checkers, session=0) for i, t in enumerate(trajs)]
    assert rows[0].samples == ["7", "7", "8", "9"] and rows[3].samples is None
    r = results(rows)
    assert r.sampling is not None and r.sampling.k == 4 and r.sampling.problems == 3
    assert r.sampling.maj_at_k == pytest.approx(1 / 4)
    assert r.sampling.pass_at_1 == pytest.approx((2 / 4 + 1 / 4) / 4)
    assert r.sampling.pass_at_k == pytest.approx(2 / 4)
    assert r.accuracy == {"strict": 0.25, "flexible": 0.25, "math_verify": 0.25}
    assert r.errors == 1 and r.mean_prompt_tokens == pytest.approx(30.0)


def test_uneven_sample_counts_use_the_smallest_k(checkers):
    p = Problem(id="p", question="q", answer="7")
    rows = [make_row(_traj(["7", "8", "7"], "7"), p, 0, checkers, 0),
            make_row(_traj(["8", "7"], "8"), p, 1, checkers, 0)]
    s = results(rows).sampling
    assert s.k == 2
    assert s.maj_at_k == pytest.approx(0.5)  # row 0 votes over ["7", "8"]: tie -> "7"
    assert s.pass_at_k == pytest.approx((pass_at_k(3, 2, 2) + 1.0) / 2)


def test_no_samples_means_no_sampling_metrics(checkers):
    p = Problem(id="p", question="q", answer="7")
    assert results([make_row(_traj(None, "7"), p, 0, checkers, 0)]).sampling is None


def _row(i, seconds, session, finished_at, tokens=10):
    return EvalRow(index=i, id=str(i), question="q", gold="1", prediction="1", response="Answer: 1",
                   extracted={}, correct={"strict": True, "flexible": True, "math_verify": True},
                   completion_tokens=tokens, seconds=seconds, graph="direct", model="m",
                   session=session, finished_at=finished_at)


def test_percentiles_and_throughput_across_sessions():
    assert percentile([1, 2, 3, 4], 50) == pytest.approx(2.5)
    assert percentile([5.0], 95) == 5.0 and percentile([], 50) == 0.0
    assert percentile(list(range(101)), 95) == pytest.approx(95.0)
    sessions = [Session(session=0, started_at=100.0, concurrency=4),
                Session(session=1, started_at=1000.0, concurrency=4)]
    rows = [_row(0, 1.0, 0, 102.0), _row(1, 2.0, 0, 104.0), _row(2, 3.0, 1, 1006.0)]
    t = timing(rows, sessions)
    assert t.wall_seconds == pytest.approx(4.0 + 6.0)  # the gap between sessions is not counted
    assert t.problems_per_second == pytest.approx(0.3)
    assert t.completion_tokens_per_second == pytest.approx(3.0)
    assert t.latency_p50 == pytest.approx(2.0) and t.sessions == 2
