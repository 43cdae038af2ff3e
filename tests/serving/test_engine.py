"""The batching engine through the LangChain chat model, on SmolLM2 (float32, greedy)."""

import asyncio
import threading

import pytest
from langchain_core.messages import HumanMessage

from studyhall.errors import ContextLengthError
from studyhall.serving.engine import Request, SamplingParams

pytestmark = pytest.mark.slow

PROMPTS = [
    "What is 2+3?",
    "Name a color.",
    "A farmer has 17 sheep and buys 5 more. How many sheep are there?",
    "Write one sentence about rain.",
    "What is the capital of France?",
    "Count from 1 to 10.",
    "Why is the sky blue?",
    "What is 12*12?",
]


def test_concurrent_requests_equal_sequential_greedy(smol):
    sequential = [smol.invoke([HumanMessage(p)], max_tokens=32).content for p in PROMPTS]

    async def together():
        return await asyncio.gather(*(smol.ainvoke([HumanMessage(p)], max_tokens=32) for p in PROMPTS))

    before = smol.engine.stats["max_rows"]
    concurrent = [m.content for m in asyncio.run(together())]
    assert concurrent == sequential
    assert smol.engine.stats["max_rows"] >= 4 or before >= 4  # they really were batched


def test_request_joining_a_running_batch_gets_its_own_answer(smol):
    engine = smol.engine
    ids = [smol._prompt_ids([HumanMessage(p)]) for p in PROMPTS[:2]]
    alone = [engine.generate(i, SamplingParams(max_new_tokens=40)) [0].text for i in ids]
    started = threading.Event()
    first = Request(ids[0], SamplingParams(max_new_tokens=40), on_text=lambda _i, _t: started.set())
    engine.submit(first)
    assert started.wait(600)
    second = engine.submit(Request(ids[1], SamplingParams(max_new_tokens=40)))
    assert first.future.result(900)[0].text == alone[0]
    assert second.future.result(900)[0].text == alone[1]


def test_n_samples_are_seeded_and_distinct(smol):
    msgs = [[HumanMessage("Tell me a random animal.")]]
    a = smol.generate(msgs, n=4, temperature=1.0, seed=7, max_tokens=12)
    b = smol.generate(msgs, n=4, temperature=1.0, seed=7, max_tokens=12)
    texts = [g.text for g in a.generations[0]]
    assert texts == [g.text for g in b.generations[0]]
    assert len(texts) == 4 and len(set(texts)) > 1
    usage = a.generations[0][0].message.usage_metadata
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0


def test_stop_strings_and_finish_reasons(smol):
    msg = smol.invoke([HumanMessage("Count from 1 to 10, one number per line.")], max_tokens=60, stop=["4"])
    assert "4" not in msg.content and "3" in msg.content
    assert msg.response_metadata["finish_reason"] == "stop"
    cut = smol.invoke([HumanMessage("Write a long story about a dragon.")], max_tokens=5)
    assert cut.response_metadata["finish_reason"] == "length"
    assert cut.usage_metadata["output_tokens"] == 5


def test_stream_concatenates_to_the_full_answer(smol):
    msgs = [HumanMessage("Count from 1 to 5.")]
    full = smol.invoke(msgs, max_tokens=30).content
    chunks = [c.content for c in smol.stream(msgs, max_tokens=30)]
    assert len([c for c in chunks if c]) > 3
    assert "".join(chunks) == full

    async def astream():
        return [c.content async for c in smol.astream(msgs, max_tokens=30)]

    assert "".join(asyncio.run(astream())) == full


def test_cancel_stops_generation_early(smol):
    engine = smol.engine
    ids = smol._prompt_ids([HumanMessage("Write a very long essay about the sea.")])
    got = threading.Event()
    req = Request(ids, SamplingParams(max_new_tokens=400, ignore_eos=True), on_text=lambda _i, _t: got.set())
    engine.submit(req)
    assert got.wait(600)
    req.cancel()
    result = req.future.result(600)[0]
    assert result.finish_reason == "cancelled"
    assert result.completion_tokens < 400


def test_prompt_longer_than_context_is_a_clear_error(smol):
    with pytest.raises(ContextLengthError, match="context holds"):
        smol.invoke([HumanMessage("word " * 9000)])


def test_budget_past_the_context_is_clamped_not_a_crash(smol, caplog):
    ctx = smol.engine.context_length
    ids = smol._prompt_ids([HumanMessage("hi " * 100)])
    req = smol.engine.submit(Request(ids, SamplingParams(max_new_tokens=ctx)))
    assert req.params.max_new_tokens == ctx - len(ids)
    req.cancel()
    req.future.result(600)


def test_unknown_option_is_rejected(smol):
    with pytest.raises(TypeError, match="unsupported generation options"):
        smol.invoke([HumanMessage("hi")], max_tokns=3)


def test_packed_and_plain_weights_give_the_same_greedy_text(smol):
    """The default engine runs its linear layers on oneDNN-packed weights; one with
    prepack off is its own engine (plain F.linear) and answers the same."""
    from studyhall.serving.loader import load_chat_model
    from studyhall.serving.transformers_backend import release_engines

    plain = load_chat_model(smol.spec, dtype="float32", max_tokens=24, prepack=False)
    try:
        assert smol.engine.packed_layers > 0 and plain.engine.packed_layers == 0
        assert plain.engine is not smol.engine
        for p in PROMPTS[:3]:
            assert plain.invoke([HumanMessage(p)]).content == smol.invoke([HumanMessage(p)], max_tokens=24).content
    finally:
        release_engines([plain.engine])


def test_shared_prompt_starts_are_prefilled_once_and_answer_the_same(smol):
    """Prompts with the same system prompt reuse its keys and values (prefix cache); the
    answers equal those of a full prefill."""
    from langchain_core.messages import SystemMessage

    engine = smol.engine
    system = SystemMessage("You are a careful math student. Solve the problem step by step and end with Answer: N.")
    questions = ["Name a color.", "What is 12*12?", "A farmer has 17 sheep and buys 5 more. How many sheep are there?"]
    engine.prefix_cache = False
    try:
        full = [smol.invoke([system, HumanMessage(q)], max_tokens=24).content for q in questions]
    finally:
        engine.prefix_cache = True
    hits, reused = engine.stats["prefix_hits"], engine.stats["prefix_tokens"]
    cached = [smol.invoke([system, HumanMessage(q)], max_tokens=24).content for q in questions]
    assert cached == full
    # The first two are remembered (their shared start: the system prompt), the third reuses it.
    shared = len(smol._prompt_ids([system])) - 8  # at least the system turn, less the generation prompt
    assert engine.stats["prefix_hits"] - hits >= 1
    assert engine.stats["prefix_tokens"] - reused >= shared
    # A prompt seen before is remembered whole: a third time reuses all of it but the last token.
    prompt = smol._prompt_ids([system, HumanMessage(questions[0])])
    assert smol.invoke([system, HumanMessage(questions[0])], max_tokens=24).content == full[0]
    before = engine.stats["prefix_tokens"]
    assert smol.invoke([system, HumanMessage(questions[0])], max_tokens=24).content == full[0]
    assert engine.stats["prefix_tokens"] - before == len(prompt) - 1
