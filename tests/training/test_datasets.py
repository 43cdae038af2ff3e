"""Datasets from trajectories made by the real graphs (scripted model): SFT, DPO, GRPO rows,
dedup, verifier tie-breaks, and bad data that names its row."""

import json

import pytest

from studyhall.agents import observer, student
from studyhall.errors import InputError
from studyhall.memory.trajectory_store import TrajectoryStore
from studyhall.training.config import DataOptions
from studyhall.training.datasets import dpo_dataset, load_records, prompt_dataset, sft_dataset
from studyhall.training.rewards import check_answer

from .conftest import ADD, MUL, SUB, simple, write_jsonl


def test_sft_rows_are_correct_solutions_in_the_agents_chat_format(traj_file):
    ds, report = sft_dataset(traj_file)
    assert len(ds) == report.rows == 7
    for row in ds:
        assert check_answer(row["completion"][0]["content"], row["answer"])  # rejection sampling: only correct
        assert row["completion"][0]["role"] == "assistant"
    students = [r for r in ds if r["prompt"][0]["content"] == student.SYSTEM]
    assert all(r["prompt"][1]["content"] == student.user_prompt(r["question"]) for r in students)
    # the observer's correction keeps the observer's own prompt (it holds the pioneer's answer)
    obs = [r for r in ds if r["prompt"][0]["content"] == observer.SYSTEM]
    assert len(obs) == 1 and "Your partner's answer" in obs[0]["prompt"][1]["content"]
    # vote: three correct samples, two identical -> two rows; wrong samples never appear
    mul = [r["completion"][0]["content"] for r in ds if r["question"] == MUL and r in students]
    assert sorted(mul) == ["4 * 6 = 24 eggs\nAnswer: 24", "6 * 4 = 24\nAnswer: 24"]
    assert report.records == 5 and report.correct < report.attempts
    assert report.sources == {"trajectory": 5, "teacher": 2}


def test_teacher_problems_are_added_once_with_an_answer_line(traj_file):
    ds, _ = sft_dataset(traj_file)
    teacher = [r for r in ds if r["source"] == "teacher"]
    assert sorted(r["answer"] for r in teacher) == ["14", "15"]
    for r in teacher:
        assert r["completion"][0]["content"].endswith(f"Answer: {r['answer']}")
    _, without = sft_dataset(traj_file, DataOptions(teacher_problems=False))
    assert without.sources == {"trajectory": 5}


def test_max_per_question_caps_rows(traj_file):
    ds, _ = sft_dataset(traj_file, DataOptions(max_per_question=1))
    questions = [r["question"] for r in ds if r["prompt"][0]["content"] == student.SYSTEM]
    assert len(questions) == len(set(questions))


def test_recorded_prompts_keep_what_each_step_saw(tmp_path):
    t = simple(ADD, "2 + 3 = 5\nAnswer: 5", "5")
    t.steps[0].prompt[0].content = "A custom optimized system prompt."
    ds, _ = sft_dataset(write_jsonl(tmp_path / "t.jsonl", [t]), DataOptions(prompt="recorded"))
    assert ds[0]["prompt"][0]["content"] == "A custom optimized system prompt."
    ds, _ = sft_dataset(write_jsonl(tmp_path / "t.jsonl", [t]))
    assert ds[0]["prompt"][0]["content"] == student.SYSTEM


def test_dpo_pairs_are_correct_vs_incorrect_with_verifier_tie_breaks(traj_file):
    ds, report = dpo_dataset(traj_file)
    assert report.rows == len(ds) > 0
    for row in ds:
        assert check_answer(row["chosen"][0]["content"], row["answer"])
        assert not check_answer(row["rejected"][0]["content"], row["answer"])
    mul = [r for r in ds if r["question"] == MUL]
    assert len(mul) == 4  # 2 distinct correct x 2 distinct incorrect, max_per_question=4
    # best-scored correct first, paired first with the most clearly wrong (lowest score)
    assert mul[0]["chosen_score"] == 0.9 and mul[0]["rejected_score"] == 0.1
    assert mul[0]["rejected"][0]["content"] == "6 * 4 = 20\nAnswer: 20"
    # the cory pioneer's wrong answer meets the direct run's right one for the same question
    add = [r for r in ds if r["question"] == ADD]
    assert add and add[0]["rejected"][0]["content"] == "2 + 3 = 6\nAnswer: 6"
    few, _ = dpo_dataset(traj_file, DataOptions(max_per_question=1))
    assert len([r for r in few if r["question"] == MUL]) == 1


def test_dpo_without_any_wrong_answer_is_a_clear_error(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [simple(ADD, "Answer: 5", "5")])
    with pytest.raises(InputError, match="no preference pairs"):
        dpo_dataset(path)


def test_grpo_rows_are_unique_problems_with_gold_answers(traj_file):
    ds, report = prompt_dataset(traj_file)
    assert sorted(ds["question"]) == sorted({ADD, MUL, SUB, ds["question"][3], ds["question"][4]})
    assert len(ds) == report.questions == 5
    assert {r["question"]: r["answer"] for r in ds}[MUL] == "24"
    assert ds[0]["prompt"] == [{"role": "system", "content": student.SYSTEM},
                               {"role": "user", "content": student.user_prompt(ds[0]["question"])}]


def test_the_data_hash_names_the_rows(traj_file, tmp_path):
    _, a = sft_dataset(traj_file)
    _, b = sft_dataset(traj_file)
    assert a.data_hash == b.data_hash and len(a.data_hash) == 16
    _, c = sft_dataset(traj_file, DataOptions(max_rows=3))
    assert c.rows == 3 and c.data_hash != a.data_hash


def test_reads_a_trajectory_store_too(tmp_path, trajectories):
    with TrajectoryStore(tmp_path / "s.sqlite") as store:
        store.put(trajectories)
        ds, report = sft_dataset(store)
    assert report.rows == 7 and len(ds) == 7


def test_empty_file_is_a_clear_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(InputError, match="holds no trajectories"):
        sft_dataset(path)
    with pytest.raises(InputError, match="no trajectories file"):
        sft_dataset(tmp_path / "missing.jsonl")


def test_malformed_row_names_its_line(tmp_path, trajectories):
    path = tmp_path / "t.jsonl"
    lines = [t.model_dump_json() for t in trajectories[:2]]
    path.write_text(lines[0] + "\n{not json\n" + lines[1] + "\n" + json.dumps({"graph": "direct"}) + "\n")
    with pytest.raises(InputError, match=r"t\.jsonl line 2: not a trajectory"):
        sft_dataset(path)
    ds, report = sft_dataset(path, DataOptions(skip_bad_rows=True))
    assert [s.origin.rsplit(" ", 1)[1] for s in report.skipped] == ["2", "4"]
    assert report.records == 2 and len(ds) == 1


def test_question_without_gold_answer_names_the_row(tmp_path):
    rows = [simple(ADD, "Answer: 5", "5"), simple(SUB, "Answer: 5", None)]
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    with pytest.raises(InputError, match=r"line 2: question 'Tom has 9 apples.*' has no gold answer"):
        prompt_dataset(path)
    ds, report = prompt_dataset(path, DataOptions(skip_bad_rows=True))
    assert len(ds) == 1 and "no gold answer" in report.skipped[0].reason


def test_nothing_correct_is_a_clear_error(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [simple(ADD, "Answer: 7", "5")])
    with pytest.raises(InputError, match="no correct solutions"):
        sft_dataset(path)


def test_records_from_a_list_name_their_index(trajectories):
    bad = simple(SUB, "Answer: 5", None)
    with pytest.raises(InputError, match=r"trajectory 2 \("):
        load_records([trajectories[0], bad])
