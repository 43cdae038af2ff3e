"""The sandbox API: correct results for ordinary math code, limits as validated config,
concurrency without blocking the event loop, and cancellation that leaves nothing behind.
Hostile programs are in test_sandbox_hostile.py."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from studyhall.tools.sandbox import (
    Sandbox,
    SandboxLimits,
    SandboxResult,
    arun_python,
    run_python,
)

MATH = [
    ("17 * 3", "51", ""),
    ("from fractions import Fraction\nFraction(3, 4) + Fraction(1, 4) * 2", "Fraction(5, 4)", ""),
    ("from decimal import Decimal, getcontext\ngetcontext().prec = 30\nDecimal(1) / Decimal(7)",
     "Decimal('0.142857142857142857142857142857')", ""),
    ("import itertools\nsum(1 for p in itertools.permutations(range(5)) if p[0] < p[-1])", "60", ""),
    ("import statistics\nstatistics.median([5, 1, 4, 2, 3])", "3", ""),
    ("import math\nprint(math.gcd(48, 18))\nmath.isqrt(10**20)", "10000000000", "6\n"),
    ("clips_april = 48\nclips_may = clips_april // 2\nprint(clips_april + clips_may)", None, "72\n"),
    ("def f(n):\n    return 1 if n < 2 else n * f(n - 1)\nf(20)", "2432902008176640000", ""),
    ("x = [i * i for i in range(10)]", None, ""),
    ("import numpy as np\nint(np.arange(1, 101).sum())", "5050", ""),
    ("import numpy as np\nnp.linalg.solve(np.array([[2.0, 1.0], [1.0, 3.0]]), np.array([3.0, 5.0])).round(6).tolist()",
     "[0.8, 1.4]", ""),
    ("import sympy as sp\nx = sp.symbols('x')\nsorted(sp.solve(x**2 - 5*x + 6, x))", "[2, 3]", ""),
    ("import sympy as sp\nsp.Rational(1, 3) + sp.Rational(1, 6)", "1/2", ""),
    ("open('notes.txt', 'w').write('42')\nint(open('notes.txt').read()) + 1", "43", ""),
    ("import tempfile\nwith tempfile.TemporaryFile() as f:\n    f.write(b'ok')\n    f.seek(0)\n    data = f.read()\ndata",
     "b'ok'", ""),
]


@pytest.fixture(scope="module")
def math_results() -> list[SandboxResult]:
    sandbox = Sandbox(max_concurrent=4)
    limits = SandboxLimits(timeout_seconds=60)

    async def run_all() -> list[SandboxResult]:
        return await asyncio.gather(*(sandbox.arun(code, limits) for code, _, _ in MATH))

    return asyncio.run(run_all())


@pytest.mark.parametrize("i", range(len(MATH)), ids=[m[0].splitlines()[-1][:40] for m in MATH])
def test_ordinary_math_code(i: int, math_results: list[SandboxResult]) -> None:
    code, value, stdout = MATH[i]
    r = math_results[i]
    assert r.ok, r.error
    assert r.error is None and r.exit_code == 0
    assert r.value == value
    assert r.stdout == stdout
    assert r.seconds > 0 and r.cpu_seconds > 0


def test_run_python_gives_value_stdout_and_timing() -> None:
    r = run_python("print('hello')\n6 * 7")
    assert r.ok and r.value == "42" and r.stdout == "hello\n" and r.stderr == ""
    assert r.seconds > 0 and r.max_rss_kib > 0 and "process" in r.layers
    assert SandboxResult.model_validate_json(r.model_dump_json()) == r


def test_runtime_error_is_structured_with_the_line() -> None:
    r = run_python("a = 1\nb = 0\nprint('before')\na / b\n")
    assert not r.ok and r.exit_code == 1 and r.stdout == "before\n"
    assert r.error.kind == "runtime_error"
    assert r.error.exception_type == "ZeroDivisionError"
    assert r.error.message == "ZeroDivisionError: division by zero"
    assert r.error.line == 4 and "a / b" in r.error.traceback


def test_syntax_error_names_the_line() -> None:
    r = run_python("x = 1\ny = (2 +\n")
    assert r.error.kind == "syntax_error" and r.error.line == 2
    assert "never closed" in r.error.message


def test_long_value_is_truncated() -> None:
    r = run_python("'a' * 100_000", SandboxLimits(output_kib=1))
    assert r.ok and r.value.endswith("[value truncated at 1024 characters]")


def test_limits_are_validated_config_with_safe_defaults() -> None:
    limits = SandboxLimits()
    assert limits.version == 1
    assert (limits.timeout_seconds, limits.cpu_seconds, limits.memory_mib) == (10.0, 5.0, 512)
    assert (limits.output_kib, limits.file_size_kib, limits.max_processes) == (64, 1024, 4)
    for bad in ({"timeout_seconds": 0}, {"memory_mib": 1}, {"output_kib": -1},
                {"max_processes": 0}, {"no_such_limit": 1}):
        with pytest.raises(ValidationError):
            SandboxLimits(**bad)


def test_run_python_works_inside_a_running_event_loop() -> None:
    async def inside() -> SandboxResult:
        return run_python("2 ** 10")

    assert asyncio.run(inside()).value == "1024"


def test_arun_does_not_block_the_event_loop() -> None:
    async def main() -> tuple[SandboxResult, int]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.02)

        task = asyncio.create_task(ticker())
        r = await arun_python("import time\ntime.sleep(1.5)\n'done'")
        stop.set()
        await task
        return r, ticks

    r, ticks = asyncio.run(main())
    assert r.value == "'done'"
    assert ticks >= 20  # 1.5 s of sleep at 20 ms a tick: the loop kept running throughout


def test_concurrency_cap_queues_runs() -> None:
    sandbox = Sandbox(max_concurrent=2)

    async def main() -> tuple[list[SandboxResult], float]:
        start = time.perf_counter()
        rs = await asyncio.gather(*(sandbox.arun("import time\ntime.sleep(1)\n1") for _ in range(4)))
        return rs, time.perf_counter() - start

    rs, wall = asyncio.run(main())
    assert all(r.value == "1" for r in rs)
    assert wall >= 2.0  # four 1 s runs, two at a time


def _sandbox_children(temp_root: Path) -> list[int]:
    """Pids of sandbox children whose run directory is under `temp_root`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"_child.py" in cmdline and str(temp_root).encode() in cmdline:
                pids.append(int(entry.name))
    return pids


def test_cancelled_run_leaves_no_process_and_no_directory(tmp_path: Path) -> None:
    sandbox = Sandbox(temp_root=tmp_path)

    async def main() -> None:
        task = asyncio.create_task(sandbox.arun("import time\ntime.sleep(600)"))
        for _ in range(200):
            await asyncio.sleep(0.05)
            if _sandbox_children(tmp_path):
                break
        assert _sandbox_children(tmp_path), "the child never started"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    for _ in range(100):
        if not _sandbox_children(tmp_path):
            break
        time.sleep(0.05)
    assert _sandbox_children(tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_runs_do_not_see_each_others_files() -> None:
    sandbox = Sandbox(max_concurrent=2)

    async def main() -> list[SandboxResult]:
        writer = sandbox.arun("open('shared.txt', 'w').write('mine')\nimport time\ntime.sleep(1)\n1")
        reader = sandbox.arun("import time\ntime.sleep(0.5)\n"
                              "try:\n    seen = open('shared.txt').read()\n"
                              "except FileNotFoundError:\n    seen = 'absent'\nseen")
        return await asyncio.gather(writer, reader)

    w, r = asyncio.run(main())
    assert w.ok and r.ok and r.value == "'absent'"


def test_default_temporary_directories_are_removed() -> None:
    import tempfile

    before = set(Path(tempfile.gettempdir()).glob("studyhall-sandbox-*"))
    r = run_python("open('x', 'w').write('y')")
    assert r.ok
    after = set(Path(tempfile.gettempdir()).glob("studyhall-sandbox-*"))
    assert after - before == set()


NON_ROOT_PROBE = """
import json, sys
sys.path.insert(0, {repo!r})
from studyhall.tools.sandbox import Sandbox, SandboxLimits
BI = "BI = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'BuiltinImporter'][0]\\n"
kernel_only = SandboxLimits(audit_hook=False, import_guard=False)
cases = {{
    "math": ("from fractions import Fraction\\nFraction(1, 2) + 1", None),
    "passwd": ("open('/etc/passwd').read()", None),
    "kernel_passwd": ("open('/etc/passwd').read()", kernel_only),
    "kernel_fork": ("import os\\nos.fork()", kernel_only),
    "threads": (BI + "t = BI.load_module('_thread')\\nimport time\\n"
                "for i in range(10000):\\n    t.start_new_thread(time.sleep, (600,))", None),
}}
sandbox = Sandbox()
out = {{}}
for name, (code, limits) in cases.items():
    r = sandbox.run(code, limits)
    out[name] = [r.ok, r.value, r.error and r.error.kind, r.error and r.error.message, r.layers]
print(json.dumps(out))
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to start a host process as another user")
def test_a_non_root_host_still_confines(tmp_path: Path) -> None:
    """The host as uid 65534 (keeping only the right to read the root-owned interpreter):
    no netns or per-run uid, but rlimits, Landlock, seccomp and the hook still hold."""
    script = tmp_path / "probe.py"
    script.write_text(NON_ROOT_PROBE.format(repo=str(Path(__file__).resolve().parents[2])))
    proc = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search",
         sys.executable, str(script)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["math"][:2] == [True, "Fraction(3, 2)"]
    layers = out["math"][4]
    assert "netns" not in layers and "uid" not in layers
    assert {"rlimits", "seccomp", "audit-hook"} <= set(layers)
    assert out["passwd"][2] == "forbidden"
    assert out["kernel_fork"][2] == "forbidden" and "seccomp" in out["kernel_fork"][3]
    assert out["threads"][2] == "runtime_error" and "can't start new thread" in out["threads"][3]
    if any(x.startswith("landlock") for x in layers):
        assert out["kernel_passwd"][2] == "runtime_error"
        assert "Permission denied" in out["kernel_passwd"][3]


def test_children_die_with_the_host(tmp_path: Path) -> None:
    """A host killed outright (no cleanup) takes its sandboxed children with it."""
    runs = tmp_path / "runs"
    runs.mkdir()
    host = subprocess.Popen([sys.executable, "-c", (
        f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})\n"
        "from studyhall.tools.sandbox import Sandbox\n"
        f"Sandbox(temp_root={str(runs)!r}).run('import time\\ntime.sleep(600)')\n")])
    try:
        for _ in range(400):
            if _sandbox_children(runs):
                break
            time.sleep(0.05)
        assert _sandbox_children(runs), "the child never started"
        time.sleep(1.0)  # let it get past its setup and into the code's sleep
        host.kill()
        host.wait()
        for _ in range(100):
            if not _sandbox_children(runs):
                break
            time.sleep(0.05)
        assert _sandbox_children(runs) == []
    finally:
        host.kill()


def test_code_that_is_not_text_is_an_input_error() -> None:
    from studyhall.errors import InputError

    with pytest.raises(InputError, match="must be a str"):
        run_python(b"1 + 1")  # type: ignore[arg-type]
