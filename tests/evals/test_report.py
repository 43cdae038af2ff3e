"""Comparing runs: one column per run, fairness notes, a PNG with one point per run."""

import json

import pytest

from studyhall.errors import InputError
from studyhall.evals.checkers import Checkers
from studyhall.evals.harness import ROWS, run_eval
from studyhall.evals.report import load_summaries, plot, table, warnings
from studyhall.serving.fake import ScriptedChatModel


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    data = root / "set.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i} + {i}?", "answer": 2 * i}) + "\n"
                            for i in range(6)))
    right = ScriptedChatModel.from_rules(*[(f"What is {i} \\+", f"{i} + {i} = {2 * i}\nAnswer: {2 * i}")
                                           for i in range(6)], spec="fake:right")
    wrong = ScriptedChatModel(default="I think it is 1.\nAnswer: 1", spec="fake:wrong")
    with Checkers() as checkers:
        run_eval(root / "a" / "good", data=data, model=right, checkers=checkers)
        run_eval(root / "b" / "good", data=data, model=wrong, checkers=checkers)
        run_eval(root / "fewer", data=data, model=right, limit=3, checkers=checkers)
    return root


def test_a_table_column_per_run_and_clear_names(runs):
    from rich.console import Console

    summaries = load_summaries([runs / "a" / "good", runs / "b" / "good"])
    assert [s.name for s in summaries] == [str(runs / "a" / "good"), str(runs / "b" / "good")]
    console = Console(width=200, record=True)
    console.print(table(summaries))
    text = console.export_text()
    assert "accuracy strict" in text and "100.0%" in text and "0.0%" in text and "fake:wrong" in text
    assert warnings(summaries) == []


def test_unfair_or_unfinished_comparisons_are_noted(runs):
    rows = (runs / "fewer" / ROWS).read_text().splitlines()
    (runs / "fewer" / ROWS).write_text("\n".join(rows[:2]) + "\n")  # as if killed
    summaries = load_summaries([runs / "a" / "good", runs / "fewer"])
    notes = warnings(summaries)
    assert any("different problem sets" in n for n in notes)
    assert any("fewer is unfinished (2/3" in n for n in notes)
    assert summaries[1].results.problems == 2  # recomputed from the rows, not a stale summary


def test_plot_is_a_png_with_one_point_per_run(runs, tmp_path):
    summaries = load_summaries([runs / "a" / "good", runs / "b" / "good"])
    path = plot(summaries, tmp_path / "cmp.png", checker="strict")
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(InputError, match="unknown checker"):
        plot(summaries, tmp_path / "x.png", checker="exact")
    with pytest.raises(InputError, match="no runs"):
        load_summaries([])
