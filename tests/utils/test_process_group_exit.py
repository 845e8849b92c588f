"""At exit, a process waits for torch's collective worker threads to finish before the interpreter shuts down."""

from __future__ import annotations

import ctypes
import sys
import threading
import time

import pytest

from trellis.utils.process_group import settle_worker_threads

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread states are read from /proc")

_PR_SET_NAME = 15


def worker(name: str, busy_seconds: float, done: threading.Event) -> threading.Thread:
    """A thread that the kernel knows by `name` (as torch names its gloo workers), busy for a while, then asleep."""

    def run() -> None:
        ctypes.CDLL(None).prctl(_PR_SET_NAME, name.encode())
        until = time.monotonic() + busy_seconds
        while time.monotonic() < until:
            pass
        done.wait()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_exit_waits_while_a_collective_worker_is_still_running() -> None:
    done = threading.Event()
    started = time.monotonic()
    thread = worker("pt_gloo_runloop", 0.4, done)
    try:
        settle_worker_threads(timeout=5.0)
        assert time.monotonic() - started >= 0.4
    finally:
        done.set()
        thread.join()


def test_exit_does_not_wait_for_asleep_workers_or_other_threads() -> None:
    done = threading.Event()
    threads = [worker("pt_gloo_runloop", 0.0, done), worker("data_loader", 1.5, done)]
    time.sleep(0.05)  # the worker is asleep by now
    try:
        started = time.monotonic()
        settle_worker_threads(timeout=5.0)
        assert time.monotonic() - started < 1.0
    finally:
        done.set()
        for thread in threads:
            thread.join()


def test_a_worker_that_never_settles_delays_exit_by_the_timeout_only() -> None:
    done = threading.Event()
    thread = worker("pt_gloo_runloop", 1.5, done)
    try:
        started = time.monotonic()
        settle_worker_threads(timeout=0.3)
        assert 0.3 <= time.monotonic() - started < 1.2
    finally:
        done.set()
        thread.join()
