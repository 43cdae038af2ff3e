"""SFT on SmolLM2: LoRA parameters change, loss falls on a tiny overfit set, the saved
adapter loads back (peft, our engine) and changes greedy outputs; Masked Thought."""

import json

import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from studyhall.agents import student
from studyhall.training.config import VLLM_LORA_RANKS
from studyhall.training.runs import train

from ..conftest import SMOL
from .conftest import Snapshot, logged, lora_tensors, simple, tiny, write_jsonl

QUESTION = "What is 7 + 6?"
ANSWER = "Step 1: 7 + 6 = 13\nAnswer: 13"


def test_masked_thought_masks_only_response_tokens_at_the_rate():
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from studyhall.training.sft import MaskedThoughtCollator

    inner = DataCollatorForLanguageModeling(pad_token_id=0)
    examples = []
    for n in range(8):
        ids = list(range(100 + n, 100 + n + 300 + 10 * n))
        examples.append({"input_ids": ids, "labels": [-100] * 60 + ids[60:]})
    plain = inner(examples)
    masked = MaskedThoughtCollator(inner, 0.3, mask_token_id=7, seed=1)(examples)
    assert torch.equal(masked["labels"], plain["labels"])  # labels untouched
    changed = masked["input_ids"] != plain["input_ids"]
    response = plain["labels"] != -100
    assert not (changed & ~response).any()  # prompt and padding never masked
    assert (masked["input_ids"][changed] == 7).all()
    rate = changed.sum().item() / response.sum().item()
    assert 0.25 < rate < 0.35
    assert torch.equal(MaskedThoughtCollator(inner, 0.0, 7)(examples)["input_ids"], plain["input_ids"])


@pytest.mark.slow
def test_sft_learns_saves_and_the_adapter_changes_greedy_output(tmp_path, settings, smol):
    data = write_jsonl(tmp_path / "t.jsonl", [simple(QUESTION, ANSWER, "13"), simple(QUESTION, "Answer: 12", "13")])
    out = tmp_path / "adapters" / "sft-tiny"
    snap = Snapshot()
    meta = train("sft", data, out, config=tiny("sft", max_steps=8, learning_rate=3e-3), settings=settings,
                 callbacks=[snap])
    # every LoRA parameter moved; nothing else was trainable
    assert snap.before and all("lora_" in n for n in snap.before) and snap.unchanged() == []
    # on a thread of its own (no OpenMP pool left on the caller's: studyhall.torch_threads)
    assert snap.thread == "studyhall-train"
    # the loss falls on the one-example overfit set
    losses = [h["loss"] for h in logged(out) if "loss" in h]
    assert len(losses) == 8 and losses[-1] < 0.5 * losses[0]
    # metadata
    assert meta.method == "sft" and meta.base.spec == SMOL and meta.data_size == 1
    assert meta.data_hash == meta.extra["data_report"]["data_hash"] and meta.metrics["steps"] == 8
    assert meta.config["lora"]["r"] == 8 and meta.parent is None and meta.created
    assert not (out / "checkpoints").exists() and not list(tmp_path.glob("adapters/.sft-tiny*"))
    # the folder is what vLLM's LoRARequest reads: peft LoRA config + safetensors, no extra modules
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] in VLLM_LORA_RANKS and not cfg.get("modules_to_save")
    assert sorted(cfg["target_modules"]) == ["q_proj", "v_proj"]
    keys = list(lora_tensors(out))
    assert keys and all(k.startswith("base_model.model.") and k.endswith(("lora_A.weight", "lora_B.weight")) for k in keys)
    # the transformers backend serves it (peft), and greedy output changes toward the data
    msgs = [SystemMessage(student.SYSTEM), HumanMessage(student.user_prompt(QUESTION))]
    base = smol.invoke(msgs, max_tokens=16).content
    tuned = smol.invoke(msgs, max_tokens=16, adapter=str(out)).content
    assert not base.startswith("Step 1") and tuned.startswith("Step 1: 7 + 6 = 13")


@pytest.mark.slow
def test_training_continues_a_parent_adapter(tmp_path, settings):
    data = write_jsonl(tmp_path / "t.jsonl", [simple(QUESTION, ANSWER, "13")])
    parent = tmp_path / "adapters" / "p"
    train("sft", data, parent, config=tiny("sft", max_steps=1), settings=settings)
    child = tmp_path / "adapters" / "c"
    meta = train("sft", data, child, config=tiny("sft", max_steps=1, parent=str(parent)), settings=settings)
    parent_meta = json.loads((parent / "studyhall-adapter.json").read_text())
    assert meta.parent == str(parent.resolve()) and meta.parent_id == parent_meta["id"]
    before, after = lora_tensors(parent), lora_tensors(child)
    assert before.keys() == after.keys() and any((before[k] != after[k]).any() for k in before)
