import json

import pytest

from studyhall.errors import InputError
from studyhall.evals.datasets import find_gsm8k, load_gsm8k, load_jsonl, load_problem_set, subset


def test_gsm8k_from_the_shared_folder():
    folder = find_gsm8k()
    assert folder is not None, "GSM8K test data not found (../shared/data/gsm8k)"
    test = load_gsm8k(folder, "test")
    assert len(test.problems) == 1319 and not test.skipped
    assert test.problems[0].answer == "18"
    train = load_gsm8k(folder, "train")
    assert len(train.problems) == 7473
    assert all("," not in p.answer for p in train.problems)
    assert "<<" not in train.problems[0].solution


def test_any_jsonl_with_bad_records_reported(tmp_path):
    f = tmp_path / "set.jsonl"
    rows = [
        {"q": "a", "a": "1,080"}, "not json", {"q": "b", "a": "-3"}, {"q": "", "a": "1"},
        {"q": "c", "a": "n/a"}, {"q": "d", "a": "2.5"}, {"q": "e", "a": "3/4"}, {"q": "f"},
    ]
    f.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    ps = load_jsonl(f, question_field="q", answer_field="a")
    assert [p.answer for p in ps.problems] == ["1080", "-3", "2.5", "3/4"]
    assert [(s.line, s.reason.split()[0]) for s in ps.skipped] == [(2, "not"), (4, "missing"), (5, "no"), (8, "missing")]


def test_subsets_are_deterministic():
    items = list(range(100))
    assert subset(items, 5) == [0, 1, 2, 3, 4]
    assert subset(items, 5, seed=1) == subset(items, 5, seed=1) != subset(items, 5, seed=2)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no GSM8K files"):
        load_gsm8k(tmp_path / "nowhere", "test")


def test_duplicate_ids_are_reported_and_skipped(tmp_path):
    f = tmp_path / "ids.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [
        {"id": "a", "question": "q1", "answer": 1}, {"id": "a", "question": "q2", "answer": 2},
        {"id": "b", "question": "q3", "answer": -0.5},
    ]) + "\n")
    ps = load_jsonl(f)
    assert [(p.id, p.answer) for p in ps.problems] == [("a", "1"), ("b", "-0.5")]
    assert [(s.line, s.reason) for s in ps.skipped] == [(2, "duplicate id 'a'")]


def test_what_data_names(tmp_path):
    f = tmp_path / "mine.jsonl"
    f.write_text(json.dumps({"problem": "What is 1/2 + 1/4?", "solution": "3/4"}) + "\n")
    mine = load_problem_set(f, question_field="problem", answer_field="solution")
    assert mine.name == "mine" and mine.problems[0].answer == "3/4"
    folder = load_problem_set(find_gsm8k(), split="train")
    assert folder.name == "gsm8k-train" and len(folder.problems) == 7473
    assert load_problem_set(None).name == "gsm8k-test"
    with pytest.raises(InputError, match="no such data file or folder"):
        load_problem_set(tmp_path / "missing.jsonl")
    with pytest.raises(InputError, match="no dev.jsonl"):
        load_problem_set(find_gsm8k(), split="dev")
