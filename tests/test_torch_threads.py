"""on_own_thread: result and errors come back, the thread count is set there, and the OpenMP
pool its torch work started is gone afterwards (a pool left behind slows the engine)."""

import os
import threading
import time

import pytest

from studyhall.torch_threads import on_own_thread


def _tids() -> set[str]:
    return set(os.listdir("/proc/self/task"))


def _parallel_work() -> None:
    import torch

    x = torch.ones(1 << 22)
    for _ in range(3):
        (x * 2).sum()  # elementwise + reduction over 4M floats: an OpenMP parallel region


def _gone(tids: set[str], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while tids & _tids() and time.monotonic() < deadline:
        time.sleep(0.05)
    return not tids & _tids()


def test_result_errors_and_thread_count_come_back():
    import torch

    seen: dict = {}

    def work(a: int, b: int = 0) -> int:
        seen["thread"] = threading.current_thread()
        seen["threads"] = torch.get_num_threads()
        return a + b

    assert on_own_thread(work, 2, b=3, threads=1, name="studyhall-test") == 5
    assert seen["thread"] is not threading.current_thread() and seen["thread"].name == "studyhall-test"
    assert seen["threads"] == 1
    before = torch.get_num_threads()
    on_own_thread(work, 1)
    assert seen["threads"] == before  # default: the caller's count

    def boom() -> None:
        raise ValueError("bad input 42")

    with pytest.raises(ValueError, match="bad input 42"):
        on_own_thread(boom)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="follows OS threads through /proc (Linux)")
def test_the_openmp_pool_ends_with_the_thread_but_stays_on_a_living_one():
    # OS threads born while the work ran: the worker thread and its OpenMP pool's thread(s)
    before = _tids()

    def work() -> set[str]:
        _parallel_work()
        return _tids() - before

    born = on_own_thread(work, threads=2)
    assert len(born) >= 2
    assert _gone(born)

    # The same work on a thread that lives on keeps its pool's worker: what on_own_thread avoids.
    before = _tids()
    seen: dict = {}
    done, release = threading.Event(), threading.Event()

    def linger() -> None:
        import torch

        torch.set_num_threads(2)
        seen["born"] = work()
        done.set()
        release.wait(10)

    keeper = threading.Thread(target=linger, daemon=True)
    keeper.start()
    assert done.wait(30) and len(seen["born"]) >= 2
    time.sleep(0.3)
    assert seen["born"] <= _tids()  # the lingering thread and its OpenMP worker are still there
    release.set()
    keeper.join(10)
    assert _gone(seen["born"])


def test_ctrl_c_reaches_the_caller_while_the_work_runs():
    import signal
    import subprocess
    import sys

    code = ("import sys, time\n"
            "from studyhall.torch_threads import on_own_thread\n"
            "def work():\n"
            "    print('ready', flush=True)  # the work has started on its thread\n"
            "    time.sleep(60)\n"
            "try:\n"
            "    on_own_thread(work)\n"
            "except KeyboardInterrupt:\n"
            "    print('interrupted', flush=True)\n"
            "    sys.exit(130)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(1.0)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "interrupted" in out
    assert time.monotonic() - started < 10  # not after the 60 s of work
