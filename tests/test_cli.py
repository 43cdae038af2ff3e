"""The command line, run as real subprocesses."""

import json
import subprocess
import sys

import pytest

from .conftest import NATALIA, QWEN, SMOL, studyhall_cmd


def run(*args: str, input: str | None = None, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run(studyhall_cmd(*args), capture_output=True, text=True, input=input, timeout=timeout)


def test_help_imports_no_ml_stack():
    code = (
        "import sys; from studyhall.cli import app; "
        "heavy = [m for m in ('torch', 'transformers', 'langgraph', 'chromadb', 'trl') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert run("--help").returncode == 0


def test_graphs_lists_each_with_a_line():
    out = run("graphs")
    assert out.returncode == 0 and out.stdout.startswith("direct")


def test_empty_question_is_a_clear_error():
    out = run("solve", "  ", "--model", "fake:none.json")
    assert out.returncode == 2 and "question is empty" in out.stderr and "Traceback" not in out.stderr


def test_unknown_model_spec_lists_the_valid_forms():
    out = run("solve", "What is 2+3?", "--model", "gpt4")
    assert out.returncode == 2
    assert "openai:BASE_URL#MODEL" in out.stderr and "packaged:NAME" in out.stderr


def test_solve_json_with_a_scripted_model(tmp_path):
    script = tmp_path / "s.json"
    script.write_text(json.dumps({"default": "2 + 3 = 5\nAnswer: 5"}))
    out = run("solve", "What is 2+3?", "--model", f"fake:{script}", "--json", "--gold", "5")
    assert out.returncode == 0, out.stderr
    traj = json.loads(out.stdout)
    assert traj["final_answer"] == "5" and traj["correct"] is True and traj["graph"] == "direct"


def test_question_from_stdin(tmp_path):
    script = tmp_path / "s.json"
    script.write_text(json.dumps({"default": "Answer: 9"}))
    out = run("solve", "-", "--model", f"fake:{script}", input="What is 4+5?\n")
    assert out.returncode == 0 and "Answer: 9" in out.stdout


def test_models_lists_packaged_models():
    out = run("models")
    assert out.returncode == 0 and "smollm2-135m" in out.stdout


@pytest.mark.slow
def test_solve_on_smollm_prints_steps_and_an_answer():
    out = run("solve", "What is 2+3?", "--model", SMOL, "--max-tokens", "48")
    assert out.returncode == 0, out.stderr
    assert "student" in out.stdout and "Answer:" in out.stdout


@pytest.mark.slow
@pytest.mark.qwen
def test_default_model_solves_natalia():
    out = run("solve", NATALIA, "--model", QWEN, "--json")
    assert out.returncode == 0, out.stderr
    traj = json.loads(out.stdout)
    assert traj["final_answer"] == "72"
