"""Typed configs: documented defaults, dotted overrides, clear errors."""

import pytest

from studyhall.errors import ConfigError, InputError
from studyhall.training.config import CONFIGS, GRPOConfig, make_config


def test_every_field_has_a_default_and_a_description_or_a_model():
    for cls in CONFIGS.values():
        cfg = cls()
        assert cfg.method in CONFIGS
        for name, info in cls.model_fields.items():
            assert not info.is_required(), f"{cls.__name__}.{name} has no default"


def test_dotted_overrides_reach_nested_fields():
    cfg = make_config("grpo", {"lora.r": 8, "rewards.format": 0, "max_steps": 3, "num_generations": 2})
    assert cfg.lora.r == 8 and cfg.rewards.format == 0 and cfg.max_steps == 3
    assert cfg.rewards.correctness == 1.0 and cfg.learning_rate == GRPOConfig().learning_rate


def test_bad_values_name_the_field():
    with pytest.raises(ConfigError, match=r"lora\.r = 12: .*vLLM serves LoRA ranks"):
        make_config("sft", {"lora.r": 12})
    with pytest.raises(ConfigError, match="unknown option 'swap_every'"):
        make_config("sft", {"swap_every": 2})
    with pytest.raises(ConfigError, match="multiple of num_generations"):
        make_config("grpo", {"batch_size": 3, "num_generations": 2})
    with pytest.raises(InputError, match="unknown training method 'ppo'"):
        make_config("ppo")


def test_training_a_vllm_spec_trains_the_weights_the_engine_serves():
    from studyhall.training.runs import weights_spec

    assert str(weights_spec("vllm:packaged:smollm2-135m-instruct")) == "packaged:smollm2-135m-instruct"
    assert str(weights_spec("vllm:/models/qwen")) == "hf:/models/qwen"
    assert str(weights_spec("vllm:hf:/models/qwen")) == "hf:/models/qwen"
    assert str(weights_spec("hf:/models/qwen")) == "hf:/models/qwen"
    with pytest.raises(InputError, match="training needs local weights"):
        weights_spec("openai:http://127.0.0.1:8000/v1#qwen")
