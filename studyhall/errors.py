"""Errors a person can act on: each says what went wrong and what to do instead."""

from __future__ import annotations


class StudyhallError(Exception):
    """Base class; the CLI prints these as one clear message instead of a traceback."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class ConfigError(StudyhallError):
    """A setting in studyhall.toml or STUDYHALL_* has a value that is not allowed."""


class ModelSpecError(StudyhallError):
    """A model spec string is not one of the known forms."""


class ModelNotInstalledError(StudyhallError):
    """The package that carries a model's weights is not installed."""


class ChecksumError(StudyhallError):
    """Joined or cached weights do not match the expected checksum."""


class InputError(StudyhallError):
    """Bad input from the user: empty question, malformed record, unknown name."""


class ContextLengthError(InputError):
    """A prompt does not fit the model's context window."""


class BackendError(StudyhallError):
    """The model backend failed (server down, timeout, engine crash)."""
