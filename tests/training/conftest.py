"""Training fixtures: trajectories made by the real graphs over a scripted model, written
to JSONL as the trajectory store exports them, and tiny configs for the SmolLM2 runs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from studyhall.api import build_graph
from studyhall.graphs.runner import arun
from studyhall.memory.trajectory_store import TrajectoryStore
from studyhall.records import Trajectory
from studyhall.serving.fake import Rule, ScriptedChatModel

from ..conftest import SMOL

ADD = "What is 2 + 3?"
MUL = "A box holds 6 eggs. How many eggs are in 4 boxes?"
SUB = "Tom has 9 apples and eats 4. How many are left?"


def _run(graph: str, model, question: str, gold: str | None, **options) -> Trajectory:
    compiled = build_graph(graph, model, checkpointer=None, **options)
    extra = options.pop("_extra", None)
    return asyncio.run(arun(compiled, question, graph_name=graph, model="fake", gold=gold, extra_inputs=extra))


def graph_trajectories() -> list[Trajectory]:
    """direct (right and wrong), vote (mixed samples, verifier scores), teach (new problems), cory."""
    out = []
    right = ScriptedChatModel(rules=[Rule(pattern="Problem: What is 2", replies=["2 + 3 = 5\nAnswer: 5"])])
    out.append(_run("direct", right, ADD, "5"))
    wrong = ScriptedChatModel(rules=[Rule(pattern="Problem: Tom has", replies=["9 + 4 = 13\nAnswer: 13"])])
    out.append(_run("direct", wrong, SUB, "5"))
    vote = ScriptedChatModel(rules=[
        Rule(pattern="strict math teacher.*6 \\* 4 = 24", replies=["Verdict: correct\nScore: 0.9"]),
        Rule(pattern="strict math teacher.*6 \\+ 4", replies=["Verdict: incorrect\nScore: 0.3"]),
        Rule(pattern="strict math teacher", replies=["Verdict: incorrect\nScore: 0.1"]),
        Rule(pattern="careful math student", replies=[
            "6 * 4 = 24\nAnswer: 24", "6 + 4 = 10\nAnswer: 10", "4 * 6 = 24 eggs\nAnswer: 24",
            "6 * 4 = 20\nAnswer: 20", "6 * 4 = 24\nAnswer: 24",
        ]),
    ])
    out.append(_run("vote", vote, MUL, "24", k=5, first=3, step=2))
    lesson = ("Problem: A crate holds 5 pears. How many pears are in 3 crates?\nSolution: 5 * 3 = 15\nAnswer: 15\n\n"
              "Problem: A bag holds 7 nuts. How many nuts are in 2 bags?\nSolution: 7 * 2 = 14\nAnswer: 14\n")
    teach = ScriptedChatModel(rules=[
        Rule(pattern="answered the problem below wrongly", replies=[lesson]),
        Rule(pattern="Problem: Tom has", replies=["9 - 4 = 5\nAnswer: 5"]),
        Rule(pattern="Problem: A box holds 6 eggs", replies=["6 + 4 = 10\nAnswer: 10"]),
        Rule(pattern="Problem: A crate", replies=["5 * 3 = 15\nAnswer: 15"]),
        Rule(pattern="Problem: A bag", replies=["7 * 2 = 14\nAnswer: 14"]),
    ])
    batch = [{"question": SUB, "answer": "5"}, {"question": MUL, "answer": "24"}]
    out.append(_run("teach", teach, SUB, "5", check="student", _extra={"batch": batch}))
    cory = ScriptedChatModel(rules=[
        Rule(pattern="working with a partner", replies=["Partner forgot to add. 2 + 3 = 5\nAnswer: 5"]),
        Rule(pattern="careful math student", replies=["2 + 3 = 6\nAnswer: 6"]),
    ])
    out.append(_run("cory", cory, ADD, "5"))
    return out


@pytest.fixture(scope="session")
def trajectories() -> list[Trajectory]:
    return graph_trajectories()


@pytest.fixture
def traj_file(tmp_path: Path, trajectories: list[Trajectory]) -> Path:
    path = tmp_path / "trajectories.jsonl"
    with TrajectoryStore(tmp_path / "store.sqlite") as store:
        store.put(trajectories)
        store.export_jsonl(path)
    return path


def tiny(method: str, **overrides):
    """A config small enough for a CPU test: r=8 on q/v, short sequences, one thread."""
    from studyhall.training.config import make_config

    base = {"model": SMOL, "lora.r": 8, "lora.alpha": 16, "lora.target_modules": ["q_proj", "v_proj"],
            "max_length": 128, "batch_size": 1, "grad_accum": 1, "threads": 1, "warmup_ratio": 0.0,
            "save_steps": 1000}
    return make_config(method, base | overrides)


def write_jsonl(path: Path, trajectories: list[Trajectory]) -> Path:
    path.write_text("".join(t.model_dump_json() + "\n" for t in trajectories))
    return path


def simple(question: str, completion: str, gold: str, **kw) -> Trajectory:
    """A direct-graph-shaped trajectory, built by hand (for tiny overfit sets)."""
    from studyhall.agents import student
    from studyhall.records import AgentStep, ChatTurn

    step = AgentStep(role="student", node="student", completion=completion, prompt=[
        ChatTurn(role="system", content=student.SYSTEM), ChatTurn(role="user", content=student.user_prompt(question))])
    return Trajectory(question=question, graph="direct", model="fake", steps=[step], gold_answer=gold, **kw)


class Snapshot:
    """A trainer callback that keeps every trainable parameter before and after training, and
    the name of the thread that trained."""

    def __new__(cls):
        from transformers import TrainerCallback

        class _Snapshot(TrainerCallback):
            def __init__(self) -> None:
                self.before: dict = {}
                self.after: dict = {}
                self.thread = ""

            def on_train_begin(self, args, state, control, model=None, **kw):
                import threading

                self.thread = threading.current_thread().name
                self.before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

            def on_train_end(self, args, state, control, model=None, **kw):
                self.after = {n: p.detach().clone() for n, p in model.named_parameters() if n in self.before}

            def unchanged(self) -> list[str]:
                import torch

                return [n for n in self.before if torch.equal(self.before[n], self.after[n])]

        return _Snapshot()


def logged(out: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in (out / "training-log.jsonl").read_text().splitlines()]


def lora_tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def length_reward(prompts, completions, **_):
    """A reward with spread in every group (so a few GRPO/CORY steps always have a signal)."""
    from studyhall.training.rewards import completion_text

    return [len(completion_text(c)) / 50 for c in completions]


length_reward.__name__ = "length"
