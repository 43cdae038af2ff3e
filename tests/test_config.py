from pathlib import Path

import pytest

from studyhall.config import DEFAULT_MODEL, load_settings
from studyhall.errors import ConfigError


def test_defaults(settings):
    assert settings.model == DEFAULT_MODEL
    assert settings.dtype == "auto"
    assert settings.version == 1


def test_toml_then_env_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    cfg = tmp_path / "studyhall.toml"
    cfg.write_text('model = "packaged:smollm2-135m-instruct"\nthreads = 1\nmax_batch_size = 4\n')
    monkeypatch.setenv("STUDYHALL_CONFIG", str(cfg))
    s = load_settings()
    assert (s.model, s.threads, s.max_batch_size) == ("packaged:smollm2-135m-instruct", 1, 4)
    monkeypatch.setenv("STUDYHALL_THREADS", "2")
    assert load_settings().threads == 2
    assert load_settings(threads=3).threads == 3


@pytest.mark.parametrize(
    ("env", "value", "needle"),
    [
        ("STUDYHALL_THREADS", "lots", "threads = 'lots'"),
        ("STUDYHALL_THREADS", "0", "greater than or equal to 1"),
        ("STUDYHALL_DTYPE", "fp8", "'auto', 'bfloat16' or 'float32'"),
        ("STUDYHALL_MODEL", "gpt:foo", "valid forms"),
        ("STUDYHALL_MODEL", "packaged:nope", "packaged models:"),
    ],
)
def test_bad_values_name_field_value_and_allowed(monkeypatch, env, value, needle):
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = str(info.value)
    field = env.removeprefix("STUDYHALL_").lower()
    assert field in text and value in text and needle in text


def test_unknown_key_in_toml(tmp_path, monkeypatch):
    cfg = tmp_path / "studyhall.toml"
    cfg.write_text("modle = 'x'\n")
    monkeypatch.setenv("STUDYHALL_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match="unknown setting 'modle'"):
        load_settings()
