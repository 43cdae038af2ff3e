import pytest

from studyhall.errors import ModelSpecError
from studyhall.serving.specs import parse_spec


@pytest.mark.parametrize(
    ("text", "kind", "target", "model"),
    [
        ("packaged:qwen2.5-coder-0.5b-instruct", "packaged", "qwen2.5-coder-0.5b-instruct", None),
        ("hf:/models/x", "hf", "/models/x", None),
        ("openai:http://127.0.0.1:8000/v1#qwen", "openai", "http://127.0.0.1:8000/v1", "qwen"),
        ("vllm:packaged:qwen2.5-coder-0.5b-instruct", "vllm", "packaged:qwen2.5-coder-0.5b-instruct", None),
        ("fake:script.json", "fake", "script.json", None),
    ],
)
def test_forms(text, kind, target, model):
    spec = parse_spec(text)
    assert (spec.kind, spec.target, spec.model) == (kind, target, model)
    assert parse_spec(str(spec)) == spec


@pytest.mark.parametrize("text", ["", "qwen", "gpt:4", "openai:localhost#m", "openai:http://x/v1", "hf:"])
def test_unknown_forms_list_valid_ones(text):
    with pytest.raises(ModelSpecError) as info:
        parse_spec(text)
    assert "openai:" in str(info.value)


def test_unknown_packaged_lists_packaged():
    with pytest.raises(ModelSpecError, match="smollm2-135m-instruct"):
        parse_spec("packaged:llama")


@pytest.mark.parametrize(
    ("text", "weights"),
    [
        ("packaged:smollm2-135m-instruct", "packaged:smollm2-135m-instruct"),
        ("hf:/models/x", "hf:/models/x"),
        ("hf:packaged:smollm2-135m-instruct", "packaged:smollm2-135m-instruct"),
        ("vllm:packaged:smollm2-135m-instruct", "packaged:smollm2-135m-instruct"),
        ("vllm:hf:/models/x", "hf:/models/x"),
        ("vllm:/models/x", "hf:/models/x"),
    ],
)
def test_weights_behind_a_spec(text, weights):
    from studyhall.serving.loader import resolve_path
    from studyhall.serving.specs import weights_spec

    assert str(weights_spec(text)) == weights
    if weights.startswith("hf:"):  # the transformers loader and the trainer see the same folder
        assert resolve_path(text) == "/models/x"


@pytest.mark.parametrize("text", ["openai:http://127.0.0.1:8000/v1#qwen", "fake:script.json"])
def test_servers_and_scripts_have_no_weights(text):
    from studyhall.serving.specs import weights_spec

    with pytest.raises(ModelSpecError, match="no local weights"):
        weights_spec(text)


def test_vllm_unknown_packaged_name_is_refused():
    with pytest.raises(ModelSpecError, match="unknown packaged model 'llama'"):
        from studyhall.serving.specs import weights_spec

        weights_spec("vllm:packaged:llama")
