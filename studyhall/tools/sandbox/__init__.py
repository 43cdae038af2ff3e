"""A Python sandbox for model-written code (see docs/sandbox.md for what each layer stops).

    from studyhall.tools.sandbox import run_python, arun_python, SandboxLimits
    r = run_python("from fractions import Fraction\nFraction(1, 3) + 1")
    r.ok, r.value, r.stdout, r.error        # True, 'Fraction(4, 3)', '', None

Every run is a fresh ``python -I -S`` process in its own session, with a scrubbed
environment and a fresh temporary working directory that is removed afterwards. Layers,
outermost first (each is listed in ``SandboxResult.layers`` when in force):

- process: separate interpreter, own process group; the wall-clock timeout and the output
  limit SIGKILL the group. Stops: hangs, huge output, anything touching the host's memory.
- netns (root): a new network namespace with no interfaces up. Stops all networking.
- uid (root): a fresh unprivileged uid per run. Makes RLIMIT_NPROC count only this run,
  stops signalling other processes and writing files the uid does not own.
- rlimits: CPU time, address space, file size, open files, tasks, stack, no core dumps.
  Stops CPU burners, memory bombs, big files, fd and thread bombs. Not: wall-clock sleeps.
- landlock (Linux >= 5.13): the kernel allows reading only the Python installation and
  system libraries, and writing only the work directory; with newer ABIs no TCP and no
  signals out of the sandbox. Stops reading secrets and writing outside, even for code
  that got past the audit hook. Not: reading the (non-secret) allowed trees, stat() probes.
- seccomp: kills the process on fork/vfork/clone (except threads), execve, socket,
  ptrace, mount, namespaces, bpf, io_uring, kill of other processes, ... Stops spawning
  processes and fork bombs even from native code. Not: file access (Landlock's job).
- audit-hook (PEP 578): refuses os.system, subprocess, socket.*, ctypes calls, open()
  outside the allowed paths, gc/sys introspection that could reach the hook, ...; reports
  what was blocked and exits so the code cannot catch it. Not: code that corrupts the
  interpreter's memory (the kernel layers hold then).
- import-guard: the code itself may not import os, sys, subprocess, socket, ctypes, ...
  (libraries may); third-party packages other than numpy, sympy, mpmath are not found.
  A convenience that names the problem early; not a barrier on its own.
"""

from studyhall.tools.sandbox.models import (
    SANDBOX_VERSION,
    ErrorKind,
    SandboxError,
    SandboxLimits,
    SandboxResult,
)
from studyhall.tools.sandbox.runner import Sandbox, arun_python, default_sandbox, run_python

__all__ = [
    "SANDBOX_VERSION",
    "ErrorKind",
    "Sandbox",
    "SandboxError",
    "SandboxLimits",
    "SandboxResult",
    "arun_python",
    "default_sandbox",
    "run_python",
]
