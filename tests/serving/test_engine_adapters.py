"""LoRA adapters in the batching engine, on SmolLM2 (float32, greedy): mixed batches of base
and adapter rows in one forward pass, hot-swapped folders, wrong-base adapters refused."""

import asyncio
import json
import shutil

import pytest
from langchain_core.messages import HumanMessage

from studyhall.training.adapters import (
    AdapterError,
    AdapterMetadata,
    base_info,
    publish,
    write_metadata,
)

from ..conftest import SMOL

pytestmark = pytest.mark.slow

PROMPTS = [[HumanMessage("What is 2+3?")], [HumanMessage("Name a color.")]]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, smol):
    """Two real peft LoRA folders with random (non-zero) weights, so they visibly change outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("adapters")
    base = AutoModelForCausalLM.from_pretrained(smol.path, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    torch.manual_seed(1)
    model = get_peft_model(base, config, adapter_name="A")
    torch.manual_seed(2)
    model.add_adapter("B", config)
    out = {}
    for name in ("A", "B"):
        model.save_pretrained(str(root), selected_adapters=[name])  # non-default names go to root/NAME
        write_metadata(root / name, AdapterMetadata(name=name, method="test", base=base_info(smol.path, SMOL),
                                                    data_hash="-", data_size=0))
        out[name] = root / name
    return out


def ask(model, prompt, **kw):
    return model.invoke(prompt, max_tokens=8, **kw).content


def test_adapter_changes_greedy_output_and_base_rows_stay_base(smol, adapters):
    base = [ask(smol, p) for p in PROMPTS]
    with_a = [ask(smol, p, adapter=str(adapters["A"])) for p in PROMPTS]
    with_b = ask(smol, PROMPTS[0], adapter=str(adapters["B"]))
    assert with_a[0] != base[0] and with_a[1] != base[1] and with_b not in (base[0], with_a[0])
    assert ask(smol, PROMPTS[0]) == base[0]  # loading adapters leaves base requests alone
    assert ask(smol, PROMPTS[1], adapter="base") == base[1]


@pytest.mark.parametrize("prefill_each", [True, False], ids=["prefill-each", "prefill-batched"])
def test_base_and_adapter_rows_batch_together_and_each_gets_its_own_answer(smol, adapters, prefill_each, monkeypatch):
    monkeypatch.setattr(smol.engine, "prefill_each", prefill_each)
    jobs = [(p, a) for p in PROMPTS for a in (None, str(adapters["A"]), str(adapters["B"]))]
    alone = [ask(smol, p, adapter=a) for p, a in jobs]

    async def together():
        return await asyncio.gather(*(smol.ainvoke(p, max_tokens=8, adapter=a) for p, a in jobs))

    before = smol.engine.stats["prefills"]
    mixed = [m.content for m in asyncio.run(together())]
    assert mixed == alone
    prefills = smol.engine.stats["prefills"] - before
    assert prefills == len(jobs) if prefill_each else prefills < len(jobs)  # one each / shared batches
    assert smol.engine.stats["max_rows"] >= 4  # decoded together either way


def test_samples_with_an_adapter(smol, adapters):
    result = smol.generate([PROMPTS[1]], n=2, temperature=1.0, seed=3, max_tokens=6, adapter=str(adapters["A"]))
    again = smol.generate([PROMPTS[1]], n=2, temperature=1.0, seed=3, max_tokens=6, adapter=str(adapters["A"]))
    assert [g.text for g in result.generations[0]] == [g.text for g in again.generations[0]]
    assert result.generations[0][0].message.response_metadata["adapter"] == str(adapters["A"])


def test_a_replaced_adapter_folder_is_picked_up_on_the_next_request(smol, adapters, tmp_path):
    champion = tmp_path / "champion"
    shutil.copytree(adapters["A"], champion)
    expect_a = ask(smol, PROMPTS[0], adapter=str(adapters["A"]))
    expect_b = ask(smol, PROMPTS[0], adapter=str(adapters["B"]))
    assert ask(smol, PROMPTS[0], adapter=str(champion)) == expect_a
    staging = tmp_path / ".champion.staging"
    shutil.copytree(adapters["B"], staging)
    publish(staging, champion)  # the loop promotes a new champion into the same folder
    assert ask(smol, PROMPTS[0], adapter=str(champion)) == expect_b
    engine = smol.engine
    fingerprint = engine.loaded_adapters()[str(champion)]
    name = engine.reload_adapter(str(champion)).result(60)  # an explicit reload works too
    assert name.startswith("adapter") and engine.loaded_adapters()[str(champion)] == fingerprint
    assert ask(smol, PROMPTS[0], adapter=str(champion)) == expect_b
    assert len(engine._peft.peft_config) <= len(engine.loaded_adapters()) + 1  # old versions dropped


def test_default_adapter_by_registry_name(smol, adapters, settings):
    from studyhall.serving.loader import load_chat_model
    from studyhall.training.adapters import registry_dir

    shutil.copytree(adapters["B"], registry_dir(settings) / "math-b")
    model = load_chat_model(SMOL, settings, dtype="float32", adapter="math-b")
    assert model.engine is smol.engine  # one engine, one copy of the weights
    assert ask(model, PROMPTS[0]) == ask(smol, PROMPTS[0], adapter=str(adapters["B"]))
    assert ask(model, PROMPTS[0], adapter="base") == ask(smol, PROMPTS[0])
    assert ask(model.bind(adapter="math-b"), PROMPTS[1]) == ask(smol, PROMPTS[1], adapter=str(adapters["B"]))
    with pytest.raises(AdapterError, match="no adapter 'math-c'"):
        load_chat_model(SMOL, settings, dtype="float32", adapter="math-c")


def test_an_adapter_for_another_base_is_a_clear_error(smol, adapters, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(adapters["A"], other)
    meta = json.loads((other / "studyhall-adapter.json").read_text())
    meta["base"] |= {"spec": "packaged:qwen2.5-coder-0.5b-instruct", "weights_id": "0" * 16}
    (other / "studyhall-adapter.json").write_text(json.dumps(meta))
    with pytest.raises(AdapterError, match="was trained on packaged:qwen2.5-coder-0.5b-instruct") as err:
        ask(smol, PROMPTS[0], adapter=str(other))
    assert "--model packaged:qwen2.5-coder-0.5b-instruct" in err.value.hint


def test_a_foreign_adapter_that_does_not_fit_is_a_clear_error(smol, adapters, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    foreign = tmp_path / "foreign"
    shutil.copytree(adapters["A"], foreign)
    (foreign / "studyhall-adapter.json").unlink()  # a plain peft adapter, e.g. from the hub
    tensors = load_file(str(foreign / "adapter_model.safetensors"))
    wide = {k: torch.zeros(v.shape[0], 896) if "lora_A" in k else v for k, v in tensors.items()}
    save_file(wide, str(foreign / "adapter_model.safetensors"))
    with pytest.raises(AdapterError, match="takes 576 inputs, the adapter's 896"):
        ask(smol, PROMPTS[0], adapter=str(foreign))
    assert ask(smol, PROMPTS[0]) == ask(smol, PROMPTS[0], adapter="base")  # the engine is fine


def test_cory_graph_runs_each_role_on_its_adapter(smol, adapters):
    from studyhall.api import build_graph
    from studyhall.graphs.runner import arun

    graph = build_graph("cory", smol, checkpointer=None, pioneer_adapter=str(adapters["A"]),
                        observer_adapter=str(adapters["B"]), max_tokens=8)
    t = asyncio.run(arun(graph, "What is 2+3?", graph_name="cory", model=SMOL))
    assert t.error is None
    assert t.metadata["pioneer"]["adapter"] == str(adapters["A"])
    assert t.metadata["observer"]["adapter"] == str(adapters["B"])
