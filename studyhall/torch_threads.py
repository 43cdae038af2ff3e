"""Run heavy torch work on a short-lived thread, so its OpenMP thread pool ends with it.

libgomp gives every OS thread that runs a parallel region its own pool of worker threads, and
the pool lives as long as that thread does. When the pools together hold more threads than the
machine has CPUs, libgomp shortens the spin at every barrier (100 spins instead of 300000)
in all of them. That includes the batch engine's decode steps, which run one after another.
Measured here (2 cores, default model): a one-stream step went from ~75-95 ms to ~120-150 ms
after a single 2-thread matmul on the main thread, and stayed there. The same matmul on a
thread that had ended, or with one thread, left it unchanged. So model loading, training and
embedding with more than one thread go through ``on_own_thread``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def on_own_thread(fn: Callable[..., T], *args: Any, threads: int | None = None,
                  name: str = "studyhall-torch", **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on a new thread, waited for; its result is returned and its
    exception raised here. ``threads``: torch's thread count there (default: this thread's,
    because OpenMP settings are per thread). Ctrl-C still interrupts the caller. The thread is a
    daemon, so an interrupted caller does not wait for it at exit."""
    import torch

    count = threads or torch.get_num_threads()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            torch.set_num_threads(count)
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the caller, whatever it is
            outcome["error"] = exc

    worker = threading.Thread(target=run, name=name, daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.5)  # a timed join, so KeyboardInterrupt reaches the caller
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
