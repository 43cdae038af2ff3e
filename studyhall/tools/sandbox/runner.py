"""The host side: start one confined interpreter per run, watch it without blocking the event
loop, enforce the wall clock and the output limit, and turn what happened into a result."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import marshal
import math
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from pydantic import ValidationError

from studyhall.errors import InputError
from studyhall.tools.sandbox.models import SandboxError, SandboxLimits, SandboxResult

CHILD = Path(__file__).with_name("_child.py")
EXIT_FORBIDDEN = 117  # _guard.EXIT_FORBIDDEN (the child's modules are not imported here)
SECCOMP_BLOCKED = "a system call refused by seccomp (new processes, exec, sockets, ptrace, ...)"
_CHANNEL_CAP = 4 << 20


@cache
def _python_paths() -> tuple[str, ...]:
    """What the interpreter reads: its stdlib and the site-packages of this environment."""
    keys = ("stdlib", "platstdlib", "purelib", "platlib")
    paths = {sys.base_prefix, sys.prefix, *(sysconfig.get_paths()[k] for k in keys)}
    paths |= {os.path.realpath(p) for p in paths}
    return tuple(sorted(p for p in paths if os.path.exists(p)))


@cache
def _child_modules() -> dict[str, bytes]:
    """The child's modules, compiled once per host process."""
    here = CHILD.parent
    return {name: marshal.dumps(compile((here / f"{name}.py").read_text(), str(here / f"{name}.py"), "exec"))
            for name in ("_kernel", "_guard", "_boot")}


@cache
def _site_packages() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple(dict.fromkeys(p for p in (paths["purelib"], paths["platlib"]) if os.path.isdir(p)))


# Read-only for Landlock besides the Python paths: shared libraries, the loader cache, time
# zones, and the CPU facts numerical libraries look at. The audit hook allows less (Python-level
# opens only need the Python paths and the work directory).
_SYSTEM_READ = ("/usr/lib", "/lib", "/lib64", "/usr/lib64", "/usr/local/lib", "/etc/ld.so.cache",
                "/etc/localtime", "/usr/share/zoneinfo", "/dev/urandom", "/dev/zero",
                "/proc/cpuinfo", "/sys/devices/system/cpu")


@cache
def _others_can_reach(paths: tuple[str, ...]) -> bool:
    """Whether an unprivileged uid can traverse to every Python path (if not, the child keeps
    CAP_DAC_READ_SEARCH; Landlock and the audit hook still bound what it reads)."""
    for p in paths:
        for d in [Path(p).resolve(), *Path(p).resolve().parents]:
            if not os.stat(d).st_mode & stat.S_IXOTH:
                return False
    return True


def _child_env(work: str) -> dict[str, str]:
    """A scrubbed environment: nothing of the host's (keys, tokens, paths) reaches the code."""
    env = {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8",
           "LC_ALL": "C.UTF-8"}
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                "NUMEXPR_NUM_THREADS"):
        env[var] = "1"
    return env


@dataclass
class _Child:
    proc: subprocess.Popen
    base: str
    channel: int
    started: float
    buffers: dict[str, bytearray] = field(default_factory=dict)


def _spawn(code: str, limits: SandboxLimits, temp_root: str | None) -> _Child:
    base = tempfile.mkdtemp(prefix="studyhall-sandbox-", dir=temp_root)
    read = -1
    try:
        os.chmod(base, 0o711)
        work = os.path.join(base, "work")
        os.mkdir(work, 0o700)
        uid = None
        if os.geteuid() == 0 and limits.drop_privileges:
            uid = 2_000_000 + secrets.randbelow(1_000_000_000)
            os.chown(work, uid, uid)
        read, write = os.pipe()
        python = _python_paths()
        cfg = {
            "code": code, "workdir": work, "host_pid": os.getpid(), "channel_fd": write, "uid": uid,
            "keep_read_search": not _others_can_reach(python),
            "read_paths": [*python, *_SYSTEM_READ], "hook_read_paths": list(python),
            "site_packages": list(_site_packages()),
            "allowed_packages": list(limits.allowed_packages),
            "cpu_seconds": limits.cpu_seconds, "memory_mib": limits.memory_mib,
            "file_size_kib": limits.file_size_kib, "max_open_files": limits.max_open_files,
            "max_processes": limits.max_processes, "stack_mib": limits.stack_mib,
            "max_files": limits.max_files, "value_chars": limits.output_kib * 1024,
            "network_namespace": limits.network_namespace, "landlock": limits.landlock,
            "seccomp": limits.seccomp, "audit_hook": limits.audit_hook,
            "import_guard": limits.import_guard, "modules": _child_modules(),
        }
        cfg_path = os.path.join(base, "config.marshal")  # the child reads it with marshal
        with open(os.open(cfg_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(marshal.dumps(cfg))
        started = time.perf_counter()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-B", "-u", str(CHILD), cfg_path],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=(write,), cwd=work, env=_child_env(work), start_new_session=True,
            )
        finally:
            os.close(write)
    except BaseException:
        if read >= 0:
            os.close(read)
        _remove_tree(base)
        raise
    return _Child(proc, base, read, started)


def _remove_tree(path: str) -> None:
    """Remove the run's directory even if the code made parts of it unreadable."""

    def fix(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onexc=fix) if sys.version_info >= (3, 12) else shutil.rmtree(path, onerror=fix)


async def _readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def _reap(pid: int, pidfd: int | None) -> tuple[int, object]:
    """Wait for the child's exit without blocking the loop; returns (wait status, rusage)."""
    if pidfd is not None:
        await _readable(pidfd)
    while True:
        done, status, rusage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, rusage
        await asyncio.sleep(0.005)


@dataclass
class _Outcome:
    status: int = 0
    rusage: object = None
    seconds: float = 0.0
    timed_out: bool = False
    over: bool = False
    cut: set[str] = field(default_factory=set)


async def _watch(child: _Child, limits: SandboxLimits) -> _Outcome:
    """Read the pipes and wait for the exit, killing the process group on timeout or output
    overflow (SIGKILL: nothing in the child can catch or ignore it)."""
    loop = asyncio.get_running_loop()
    proc = child.proc
    out_cap = limits.output_kib * 1024
    outcome = _Outcome()
    pidfd = os.pidfd_open(proc.pid) if hasattr(os, "pidfd_open") else None

    def kill() -> None:
        if proc.returncode is not None:  # reaped: its pid may belong to someone else now
            return
        try:
            if pidfd is not None:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            os.killpg(proc.pid, signal.SIGKILL)  # the group: the child leads it (setsid)
        except (ProcessLookupError, PermissionError):
            pass

    streams = {"stdout": proc.stdout.fileno(), "stderr": proc.stderr.fileno(),
               "channel": child.channel}
    eofs = []
    for name, fd in streams.items():
        os.set_blocking(fd, False)
        buf = child.buffers.setdefault(name, bytearray())
        done = loop.create_future()
        eofs.append(done)

        def on_readable(fd=fd, buf=buf, done=done, name=name) -> None:
            while True:
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    return
                except OSError:
                    data = b""
                if not data:
                    loop.remove_reader(fd)
                    if not done.done():
                        done.set_result(None)
                    return
                if name == "channel":
                    if len(buf) < _CHANNEL_CAP:
                        buf += data
                    continue
                room = out_cap - len(child.buffers["stdout"]) - len(child.buffers["stderr"])
                buf += data[:max(room, 0)]
                if len(data) > room:
                    outcome.cut.add(name)
                    if not outcome.over:
                        outcome.over = True
                        kill()

        loop.add_reader(fd, on_readable)

    try:
        try:
            outcome.status, outcome.rusage = await asyncio.wait_for(
                _reap(proc.pid, pidfd), limits.timeout_seconds)
        except TimeoutError:
            outcome.timed_out = True
            kill()
            outcome.status, outcome.rusage = await _reap(proc.pid, pidfd)
        proc.returncode = os.waitstatus_to_exitcode(outcome.status)
        outcome.seconds = time.perf_counter() - child.started
        # All the child wrote is in the pipes now; only a process that left the group (which
        # seccomp makes impossible) could keep them open, so do not wait long for EOF.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*eofs), 2.0)
    finally:
        if proc.returncode is None:  # cancelled: do not leave the child running
            kill()
            threading.Thread(target=proc.wait, daemon=True).start()
        for fd in streams.values():
            loop.remove_reader(fd)
        if pidfd is not None:
            os.close(pidfd)
        os.close(child.channel)
        proc.stdout.close()
        proc.stderr.close()
    return outcome


def _records(channel: bytes) -> dict[str, str]:
    """First `layers` and `setup_error` (written before the code ran), last of the others."""
    records: dict[str, str] = {}
    for line in channel.decode("utf-8", "replace").splitlines():
        tag, _, payload = line.partition(" ")
        if tag in ("layers", "setup_error") and tag in records:
            continue
        if tag in ("layers", "setup_error", "result", "forbidden"):
            records[tag] = payload
    return records


def _classify(child: _Child, limits: SandboxLimits, o: _Outcome) -> SandboxResult:
    records = _records(bytes(child.buffers["channel"]))
    marker = f"\n[output truncated: more than {limits.output_kib} KiB]"
    out, err = (child.buffers[n].decode("utf-8", "replace") + (marker if n in o.cut else "")
                for n in ("stdout", "stderr"))
    code = child.proc.returncode
    cpu = o.rusage.ru_utime + o.rusage.ru_stime
    try:
        layers = [str(x) for x in json.loads(records.get("layers", "[]"))]
    except (ValueError, TypeError, RecursionError):
        layers = []
    base = {"stdout": out, "stderr": err, "exit_code": code, "seconds": round(o.seconds, 4),
            "cpu_seconds": round(cpu, 4), "max_rss_kib": o.rusage.ru_maxrss, "layers": layers}

    def failed(kind: str, message: str, **extra) -> SandboxResult:
        return SandboxResult(ok=False, error=SandboxError(kind=kind, message=message, **extra), **base)

    if "setup_error" in records:
        return failed("internal_error", f"the sandbox could not be set up: {records['setup_error']}")
    if o.timed_out:
        return failed("timeout", f"no result within {limits.timeout_seconds:g} s of wall-clock "
                      "time; the process group was killed")
    if o.over:
        return failed("output_limit", f"stdout + stderr exceeded {limits.output_kib} KiB; "
                      "the run was stopped and the output truncated")
    if code is not None and code < 0:
        sig = -code
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= math.ceil(limits.cpu_seconds) - 0.05):
            return failed("cpu_limit", f"the CPU-time limit of {limits.cpu_seconds:g} s was "
                          f"reached ({cpu:.2f} s used)")
        if sig == signal.SIGSYS:
            return failed("forbidden", f"forbidden: {SECCOMP_BLOCKED}", blocked=SECCOMP_BLOCKED)
        if sig == signal.SIGXFSZ:
            return failed("file_limit", f"a file grew past {limits.file_size_kib} KiB")
        if sig == signal.SIGSEGV:
            return failed("killed", "crashed with SIGSEGV (a C-level stack overflow from very "
                          "deep recursion, or native code failing)")
        return failed("killed", f"killed by {name}")
    if code == EXIT_FORBIDDEN:
        what = records.get("forbidden") or "an operation the sandbox refuses (details were lost)"
        return failed("forbidden", f"forbidden: {what}", blocked=what)
    if "result" in records:
        try:
            result = json.loads(records["result"])
            error = SandboxError.model_validate(result["error"]) if result.get("error") else None
            value = result.get("value")
            if value is not None and not isinstance(value, str):
                raise ValueError("value is not a string")
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError, ValidationError):
            return failed("runtime_error", "the run ended with an unreadable result")
        if error is None and code != 0:
            return failed("runtime_error", f"the code exited with status {code}")
        return SandboxResult(ok=error is None, value=value, error=error, **base)
    if code == 0:
        return SandboxResult(ok=True, **base)
    return failed("runtime_error", f"the process exited with status {code} before reporting a result")


class Sandbox:
    """Runs Python snippets in confined child processes, at most `max_concurrent` at once
    (per event loop for `arun`, per process for `run`), so many graph runs sharing a small
    machine queue instead of starting an interpreter each at the same moment."""

    def __init__(self, limits: SandboxLimits | None = None, *, max_concurrent: int | None = None,
                 temp_root: str | os.PathLike[str] | None = None) -> None:
        self.limits = limits or SandboxLimits()
        self.max_concurrent = max_concurrent or 2 * (os.cpu_count() or 1)
        self.temp_root = os.fspath(temp_root) if temp_root is not None else None
        self._loop_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary())
        self._thread_slots = threading.BoundedSemaphore(self.max_concurrent)

    async def arun(self, code: str, limits: SandboxLimits | None = None) -> SandboxResult:
        """Run `code` in a fresh confined interpreter; never blocks the event loop."""
        loop = asyncio.get_running_loop()
        slots = self._loop_slots.get(loop)
        if slots is None:
            slots = self._loop_slots[loop] = asyncio.Semaphore(self.max_concurrent)
        async with slots:
            return await self._run(code, limits or self.limits)

    def run(self, code: str, limits: SandboxLimits | None = None) -> SandboxResult:
        """Blocking form of `arun` (from a thread with a running loop, it uses another thread)."""
        with self._thread_slots:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return asyncio.run(self._run(code, limits or self.limits))
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                return pool.submit(asyncio.run, self._run(code, limits or self.limits)).result()

    async def _run(self, code: str, limits: SandboxLimits) -> SandboxResult:
        if not isinstance(code, str):
            raise InputError(f"sandboxed code must be a str, not {type(code).__name__}")
        try:
            child = await asyncio.to_thread(_spawn, code, limits, self.temp_root)
        except OSError as e:  # the host could not start a run (no fds, disk full, ...)
            return SandboxResult(ok=False, error=SandboxError(
                kind="internal_error", message=f"the sandbox could not start a run: {e}"))
        try:
            return _classify(child, limits, await _watch(child, limits))
        finally:
            await asyncio.to_thread(_remove_tree, child.base)


_default: Sandbox | None = None


def default_sandbox() -> Sandbox:
    global _default
    if _default is None:
        _default = Sandbox()
    return _default


def run_python(code: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run model-written `code` in the sandbox and wait for the result."""
    return default_sandbox().run(code, limits)


async def arun_python(code: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run model-written `code` in the sandbox without blocking the event loop."""
    return await default_sandbox().arun(code, limits)
