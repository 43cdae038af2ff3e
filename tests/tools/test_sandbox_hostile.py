"""Hostile programs against the Python sandbox, all run at once (with well-behaved runs beside
them) in one module-scoped batch; each test then checks its program's structured error and
that the host is intact: no file written outside, the run's temporary directory gone, the
host's memory unchanged within a bound, the concurrent good runs correct."""

from __future__ import annotations

import ast
import asyncio
import os
import socket
import sysconfig
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from studyhall.tools.sandbox import Sandbox, SandboxLimits, SandboxResult

ROOT = os.geteuid() == 0
HERE = Path(__file__).resolve()
SECRET = f"s3cret-{uuid.uuid4().hex}"

# Ways past the import guard that model-written code could find; the layers below it must hold.
OS_NS = ("os = [c for c in ().__class__.__base__.__subclasses__() "
         "if c.__name__ == '_wrap_close'][0].__init__.__globals__\n")
REAL_IMPORT = "imp = __import__.__kwdefaults__['_orig']\n"
BUILTIN = ("BI = [c for c in ().__class__.__base__.__subclasses__() "
           "if c.__name__ == 'BuiltinImporter'][0]\n")

KERNEL_ONLY = {"audit_hook": False, "import_guard": False}  # what the kernel layers stop alone


@dataclass
class Case:
    name: str
    code: str
    kind: str | None          # expected error kind; None: the run must succeed
    says: str = ""            # expected in the error message (or, for ok runs, in the value)
    limits: dict = field(default_factory=dict)
    sentinel: bool = False    # the code tries to create the file {sentinel}
    root_only: bool = False   # relies on a layer only root can set up
    server: bool = False      # connects to the test's TCP server {port}


CASES = [
    Case("syntax_error", "def f(:\n    pass\n", "syntax_error", "line 1"),
    Case("null_bytes", "x = 1\x00\n", "syntax_error", "null bytes"),
    Case("infinite_loop", "while True:\n    pass\n", "cpu_limit", "CPU-time limit",
         {"cpu_seconds": 1, "timeout_seconds": 90}),
    Case("sleep_forever", "import time\ntime.sleep(600)\n", "timeout", "wall-clock",
         {"timeout_seconds": 1.5}),
    Case("deep_recursion", "def f(n):\n    return f(n + 1)\nf(0)\n", "runtime_error",
         "RecursionError"),
    Case("c_stack_overflow", BUILTIN + "sys = BI.load_module('sys')\nsys.setrecursionlimit(10**7)\n"
         "def f(n):\n    return sorted([0], key=lambda x: f(n + 1))\nf(0)\n", "killed", "SIGSEGV"),
    Case("huge_stdout", "while True:\n    print('x' * 1000)\n", "output_limit", "64 KiB"),
    Case("huge_stderr", "e = open(2, 'w', closefd=False)\nwhile True:\n    e.write('y' * 1000)\n",
         "output_limit", "64 KiB"),
    Case("memory_bomb", "x = bytearray(10**11)\n", "memory_limit", "MemoryError"),
    Case("memory_growth", "chunks = []\nwhile True:\n    chunks.append(bytearray(2**20))\n",
         "memory_limit", "memory limit", {"memory_mib": 128}),
    Case("numpy_memory_bomb", "import numpy as np\nnp.ones((10**5, 10**5))\n", "memory_limit",
         "MemoryError", {"timeout_seconds": 60}),
    Case("read_etc_passwd", "open('/etc/passwd').read()\n", "forbidden", "/etc/passwd"),
    Case("read_home", f"open({str(Path.home() / '.bashrc')!r}).read()\n", "forbidden", "open"),
    Case("read_host_source", f"open({str(HERE)!r}).read()\n", "forbidden", HERE.name),
    Case("read_host_environ", f"open('/proc/{os.getpid()}/environ').read()\n", "forbidden",
         "environ"),
    Case("list_root_dir", OS_NS + "os['listdir']('/')\n", "forbidden", "os.listdir"),
    Case("environment_secrets", OS_NS + "dict(os['environ'])\n", None, "PATH"),
    Case("write_outside", "open('{sentinel}', 'w').write('x')\n", "forbidden",
         "writes are allowed only inside", sentinel=True),
    Case("write_by_traversal", "open('{traversal}', 'w').write('x')\n", "forbidden",
         "writes are allowed only inside", sentinel=True),
    Case("catch_the_refusal", "try:\n    open('{sentinel}', 'w')\nexcept BaseException:\n"
         "    pass\n'escaped'\n", "forbidden", "open for writing", sentinel=True),
    Case("write_into_python", "open('{site_sentinel}', 'w').write('x')\n", "forbidden",
         "open for writing"),
    Case("symlink_to_secret", OS_NS + "os['symlink']('/etc/passwd', 'p')\nopen('p').read()\n",
         "forbidden", "os.symlink"),
    Case("chdir_out", OS_NS + "os['chdir']('/')\nopen('etc/passwd').read()\n", "forbidden",
         "os.chdir"),
    Case("socket_import", "import socket\nsocket.create_connection(('127.0.0.1', {port}))\n",
         "forbidden", "import socket", server=True),
    Case("socket_past_import_guard", REAL_IMPORT + "s = imp('socket')\n"
         "s.create_connection(('127.0.0.1', {port}), timeout=2)\n", "forbidden", "socket.",
         server=True),
    Case("os_system", "import os\nos.system('touch {sentinel}')\n", "forbidden", "import os",
         sentinel=True),
    Case("dunder_import_os", "__import__('os').system('touch {sentinel}')\n", "forbidden",
         "import os", sentinel=True),
    Case("importlib_os", "import importlib\nimportlib.import_module('os')\n", "forbidden",
         "import importlib"),
    Case("os_system_via_subclasses", OS_NS + "os['system']('touch {sentinel}')\n", "forbidden",
         "os.system", sentinel=True),
    Case("subprocess_past_import_guard", REAL_IMPORT + "imp('subprocess').run(['touch', "
         "'{sentinel}'])\n", "forbidden", "subprocess.Popen", sentinel=True),
    Case("fork_bomb", OS_NS + "while True:\n    os['fork']()\n", "forbidden", "os.fork"),
    Case("ctypes_import", "import ctypes\n", "forbidden", "import ctypes"),
    Case("ctypes_libc_system", REAL_IMPORT + "ct = imp('ctypes')\n"
         "ct.CDLL(None).system(b'touch {sentinel}')\n", "forbidden", "ctypes", sentinel=True),
    Case("ctypes_read_memory", REAL_IMPORT + "ct = imp('ctypes')\nct.string_at(id(1), 64)\n",
         "forbidden", "ctypes.string_at"),
    Case("kill_the_host", OS_NS + f"os['kill']({os.getpid()}, 9)\n", "forbidden", "os.kill"),
    Case("ignore_timeout_signals", BUILTIN + "s = BI.load_module('_signal')\n"
         "for n in (s.SIGTERM, s.SIGALRM, s.SIGINT, s.SIGHUP):\n    s.signal(n, s.SIG_IGN)\n"
         "import time\ntime.sleep(600)\n", "timeout", "killed", {"timeout_seconds": 1.5}),
    Case("ignore_cpu_signal", BUILTIN + "s = BI.load_module('_signal')\n"
         "s.signal(s.SIGXCPU, s.SIG_IGN)\nwhile True:\n    pass\n", "cpu_limit", "CPU-time limit",
         {"cpu_seconds": 1, "timeout_seconds": 90}),
    Case("thread_bomb", BUILTIN + "t = BI.load_module('_thread')\nimport time\n"
         "for i in range(10000):\n    t.start_new_thread(time.sleep, (600,))\n", "runtime_error",
         "can't start new thread", root_only=True),
    Case("gc_walk_to_the_hook", REAL_IMPORT + "imp('gc').get_objects()\n", "forbidden",
         "gc.get_objects"),
    Case("trace_the_hook", BUILTIN + "BI.load_module('sys').settrace(lambda *a: None)\n",
         "forbidden", "sys.settrace"),
    Case("forge_bytecode", "(lambda: 0).__code__.replace(co_code=b'')\n", "forbidden",
         "code.__new__"),
    Case("big_file", "open('big.bin', 'wb').write(b'x' * (2 * 2**20))\n", "file_limit",
         "File too large"),
    Case("hardlink_to_secret", OS_NS + "os['link']('/etc/passwd', 'p')\nopen('p').read()\n",
         "forbidden", "os.link"),
    Case("patch_own_memory", "open('/proc/self/mem', 'wb')\n", "forbidden", "/proc/self/mem"),
    Case("add_an_audit_hook", BUILTIN + "BI.load_module('sys').addaudithook(lambda *a: None)\n",
         "forbidden", "sys.addaudithook"),
    Case("fd_exhaustion", "fds = [open('/dev/null') for _ in range(100_000)]\n", "runtime_error",
         "Too many open files"),
    Case("many_files", "for i in range(1000):\n    open(f'f{i}', 'w').close()\n", "forbidden",
         "more than 64 files"),
    Case("other_packages", "import torch\n", "runtime_error", "No module named 'torch'"),
    Case("system_exit", "raise SystemExit(3)\n", "runtime_error", "SystemExit: 3"),
    # The kernel layers alone, with the audit hook and the import guard turned off:
    Case("kernel_fork_bomb", "import os\nwhile True:\n    os.fork()\n", "forbidden", "seccomp",
         KERNEL_ONLY),
    Case("kernel_exec", "import os\nos.execv('/bin/sh', ['sh', '-c', 'touch {sentinel}'])\n",
         "forbidden", "seccomp", KERNEL_ONLY, sentinel=True),
    Case("kernel_subprocess", "import subprocess\nsubprocess.run(['touch', '{sentinel}'])\n",
         "forbidden", "seccomp", KERNEL_ONLY, sentinel=True),
    Case("kernel_socket", "import socket\nsocket.create_connection(('127.0.0.1', {port}), 2)\n",
         "forbidden", "seccomp", KERNEL_ONLY, server=True),
    Case("kernel_kill_the_host", f"import os\nos.kill({os.getpid()}, 9)\n", "forbidden",
         "seccomp", KERNEL_ONLY),
    Case("kernel_read_etc_passwd", "open('/etc/passwd').read()\n", "runtime_error",
         "Permission denied", KERNEL_ONLY),
    Case("kernel_read_host_environ", f"open('/proc/{os.getpid()}/environ').read()\n",
         "runtime_error", "Permission denied", KERNEL_ONLY),
    Case("kernel_patch_own_memory", "open('/proc/self/mem', 'wb')\n", "runtime_error",
         "Permission denied", KERNEL_ONLY),
    Case("kernel_write_outside", "open('{sentinel}', 'w').write('x')\n", "runtime_error",
         "Permission denied", KERNEL_ONLY, sentinel=True),
    Case("kernel_write_into_python", "open('{site_sentinel}', 'w').write('x')\n",
         "runtime_error", "Permission denied", KERNEL_ONLY),
    Case("netns_and_landlock_tcp", "import socket\n"
         "socket.create_connection(('127.0.0.1', {port}), 2)\n", "runtime_error", "Error",
         {**KERNEL_ONLY, "seccomp": False}, server=True, root_only=True),
]

GOOD = ("from fractions import Fraction\nimport math, statistics\n"
        "print(statistics.mean([1, 2, 3, 4]))\nFraction(1, 3) + Fraction(1, 6) + math.comb(5, 2)\n")


def vm_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class Listener:
    """A real TCP server on 127.0.0.1 that counts the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


@dataclass
class Batch:
    results: dict[str, SandboxResult]
    sentinels: dict[str, Path]
    site_sentinel: Path
    good: list[SandboxResult]
    leftovers: list[Path]
    rss_growth_kib: int
    connections: int


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Batch:
    temp_root = tmp_path_factory.mktemp("sandbox-runs")
    outside = tmp_path_factory.mktemp("outside")
    site_sentinel = Path(sysconfig.get_paths()["purelib"]) / f"studyhall-probe-{uuid.uuid4().hex}"
    sentinels = {c.name: outside / f"{c.name}.txt" for c in CASES}
    server = Listener()
    os.environ["STUDYHALL_TEST_SECRET"] = SECRET
    sandbox = Sandbox(max_concurrent=8, temp_root=temp_root)

    def code_for(case: Case) -> str:
        target = sentinels[case.name]
        return (case.code.replace("{sentinel}", str(target))
                .replace("{traversal}", "../" * 40 + str(target).lstrip("/"))
                .replace("{site_sentinel}", str(site_sentinel))
                .replace("{port}", str(server.port)))

    async def run_all() -> tuple[list[SandboxResult], list[SandboxResult]]:
        hostile = asyncio.gather(*(sandbox.arun(code_for(c), SandboxLimits(**c.limits))
                                   for c in CASES))
        await asyncio.sleep(0.5)  # the good runs start while the hostile ones are running
        good = await asyncio.gather(*(sandbox.arun(GOOD) for _ in range(4)))
        return await hostile, good

    try:
        sandbox.run("1 + 1")  # warm up the host side before measuring its memory
        rss_before = vm_rss_kib()
        hostile, good = asyncio.run(run_all())
        rss_growth = vm_rss_kib() - rss_before
    finally:
        server.close()
        os.environ.pop("STUDYHALL_TEST_SECRET", None)
        leaked = site_sentinel.exists()
        site_sentinel.unlink(missing_ok=True)
    assert not leaked, "a sandboxed run wrote into site-packages"
    return Batch(dict(zip([c.name for c in CASES], hostile, strict=True)), sentinels,
                 site_sentinel, good, list(temp_root.iterdir()), rss_growth, server.accepted)


def test_there_are_at_least_25_hostile_programs() -> None:
    assert len([c for c in CASES if c.kind is not None]) >= 25


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_program(case: Case, batch: Batch) -> None:
    if case.root_only and not ROOT:
        pytest.skip("needs the layers only root can set up (per-run uid, network namespace)")
    r = batch.results[case.name]
    if case.kind is None:
        assert r.ok, r.error
        assert case.says in (r.value or "")
    else:
        assert not r.ok
        assert r.error is not None and r.error.kind == case.kind, r.error
        assert case.says in r.error.message, r.error.message
        if case.kind == "forbidden":
            assert r.error.blocked
    # the host is intact
    assert not batch.sentinels[case.name].exists(), "a file was created outside the sandbox"
    assert not batch.site_sentinel.exists()


def test_secrets_in_the_environment_do_not_reach_the_code(batch: Batch) -> None:
    value = batch.results["environment_secrets"].value or ""
    assert SECRET not in value
    env = ast.literal_eval(value)
    assert set(env) == {"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "OPENBLAS_NUM_THREADS",
                        "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"}
    assert env["HOME"].endswith("/work") and env["TMPDIR"] == env["HOME"]


def test_output_is_truncated_with_a_marker(batch: Batch) -> None:
    out = batch.results["huge_stdout"].stdout
    assert out.endswith("[output truncated: more than 64 KiB]")
    assert 60 * 1024 < len(out) < 66 * 1024
    assert batch.results["huge_stderr"].stderr.endswith("[output truncated: more than 64 KiB]")


def test_no_connection_reached_the_host_server(batch: Batch) -> None:
    assert batch.connections == 0


def test_every_run_directory_is_removed(batch: Batch) -> None:
    assert batch.leftovers == []


def test_host_memory_is_unchanged_within_a_bound(batch: Batch) -> None:
    assert batch.rss_growth_kib < 64 * 1024, f"host RSS grew by {batch.rss_growth_kib} KiB"


def test_good_runs_beside_hostile_ones_are_correct(batch: Batch) -> None:
    assert len(batch.good) == 4
    for r in batch.good:
        assert r.ok, r.error
        assert r.stdout == "2.5\n"
        assert r.value == "Fraction(21, 2)"


@pytest.mark.skipif(not ROOT, reason="the full set of layers needs root")
def test_all_layers_are_in_force_as_root(batch: Batch) -> None:
    layers = batch.results["syntax_error"].layers
    for layer in ("process", "netns", "uid", "rlimits", "seccomp", "audit-hook", "import-guard"):
        assert layer in layers
    assert any(x.startswith("landlock-v") for x in layers)
