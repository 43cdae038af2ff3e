"""What a sandboxed run is allowed (SandboxLimits) and what it produced (SandboxResult)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SANDBOX_VERSION = 1

ErrorKind = Literal[
    "syntax_error",   # the code does not compile
    "timeout",        # wall-clock limit reached; the process group was killed
    "cpu_limit",      # CPU-time limit reached (SIGXCPU, then SIGKILL)
    "memory_limit",   # the address-space limit made an allocation fail
    "output_limit",   # stdout + stderr grew past the limit; the process was killed
    "file_limit",     # a file grew past the file-size limit (EFBIG)
    "forbidden",      # a blocked operation: network, processes, files outside, ctypes, ...
    "runtime_error",  # the code raised an exception
    "killed",         # ended by a signal none of the limits explains (e.g. SIGSEGV)
    "internal_error",  # the sandbox itself could not be set up; no code ran
]


class SandboxLimits(BaseModel):
    """Limits and layers for one run. Every field has a safe default.

    Limits: ``timeout_seconds`` (wall clock), ``cpu_seconds``, ``memory_mib`` (address
    space), ``max_processes`` (tasks, i.e. threads here, as no process can be created),
    ``output_kib`` (stdout + stderr, truncated with a marker), ``file_size_kib``,
    ``max_files`` (files the code may create), ``max_open_files``, ``stack_mib``.
    Layers (docs/sandbox.md says what each one stops): all on by default; turning one off
    exists so tests can show that the others still hold.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = SANDBOX_VERSION
    timeout_seconds: float = Field(10.0, gt=0, le=3600, description="Wall-clock limit.")
    cpu_seconds: float = Field(5.0, gt=0, le=3600, description="CPU-time limit (user + system).")
    memory_mib: int = Field(512, ge=64, le=65536, description="Address-space limit (RLIMIT_AS).")
    max_processes: int = Field(4, ge=1, le=256, description="Tasks (threads) the run may have.")
    output_kib: int = Field(64, ge=1, le=65536, description="stdout + stderr limit; more is cut off.")
    file_size_kib: int = Field(1024, ge=0, le=1 << 20, description="Largest file the code may write.")
    max_files: int = Field(64, ge=0, le=100_000, description="Files the code may create.")
    max_open_files: int = Field(64, ge=16, le=4096, description="RLIMIT_NOFILE.")
    stack_mib: int = Field(64, ge=8, le=1024, description="RLIMIT_STACK of the main thread.")
    allowed_packages: tuple[str, ...] = Field(
        ("numpy", "sympy", "mpmath"),
        description="Installed packages besides the standard library that code may import.",
    )
    network_namespace: bool = Field(True, description="As root: a fresh network namespace.")
    drop_privileges: bool = Field(True, description="As root: run as a fresh unprivileged uid.")
    landlock: bool = Field(True, description="Landlock: filesystem, TCP and signal scoping.")
    seccomp: bool = Field(True, description="seccomp: no processes, exec, sockets, ptrace.")
    audit_hook: bool = Field(True, description="PEP 578 audit hook on dangerous operations.")
    import_guard: bool = Field(True, description="The code itself may not import os, sys, ...")


class SandboxError(BaseModel):
    """Why a run did not succeed: a kind from a fixed set and a message for people."""

    version: int = SANDBOX_VERSION
    kind: ErrorKind
    message: str
    exception_type: str | None = Field(None, description="For runtime_error: the exception class.")
    blocked: str | None = Field(None, description="For forbidden: the operation refused.")
    line: int | None = Field(None, description="Line of the code where it happened, if known.")
    traceback: str | None = Field(None, description="The code's own frames, innermost last.")


class SandboxResult(BaseModel):
    """Everything one run produced."""

    version: int = SANDBOX_VERSION
    ok: bool
    stdout: str = ""
    stderr: str = ""
    value: str | None = Field(None, description="repr of the final expression, like a REPL.")
    exit_code: int | None = Field(None, description="Process status; -N when killed by signal N.")
    seconds: float = Field(0.0, description="Wall-clock time of the run.")
    cpu_seconds: float = Field(0.0, description="CPU time the child used (user + system).")
    max_rss_kib: int = Field(0, description="Peak resident memory of the child.")
    error: SandboxError | None = None
    layers: list[str] = Field(default_factory=list, description="The isolation layers in force.")
