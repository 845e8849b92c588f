"""Leaving torch.distributed's process group cleanly when the process exits."""

from __future__ import annotations

import atexit
import functools
import glob
import time

#: torch's collective backends name their worker threads so (the names Linux shows in /proc/self/task/*/comm).
_WORKER_THREAD_PREFIXES = ("pt_gloo", "pt_nccl")
#: the longest a process waits at exit for those threads to finish what they were doing.
SETTLE_TIMEOUT_SECONDS = 2.0


@functools.cache
def leave_process_group_at_exit() -> None:
    """Destroy the default process group before the interpreter shuts down (once per process).

    Left to interpreter shutdown, the backend's threads can be torn down while still running
    ("terminate called without an active exception", SIGABRT) after a run that itself succeeded.
    """
    atexit.register(leave_process_group)


def leave_process_group() -> None:
    """Let the backend's worker threads finish, then destroy the default process group (if there is one)."""
    import torch.distributed as dist

    settle_worker_threads()
    if dist.is_initialized():
        dist.destroy_process_group()


def settle_worker_threads(timeout: float = SETTLE_TIMEOUT_SECONDS) -> None:
    """Return once torch's collective worker threads are idle, with the GIL released meanwhile (Linux; elsewhere
    a no-op).

    A gloo worker frees a finished collective's tensors after the caller has moved on. Freeing a tensor that
    Python knows takes the GIL, and once the interpreter is finalizing, a thread that asks for it is ended with
    pthread_exit, which C++ turns into "terminate called without an active exception" (SIGABRT): a run that
    succeeded would die at exit whenever its last collective came just before it. Every worker seen asleep at
    two polls with the GIL free in between has nothing left to do.
    """
    deadline = time.monotonic() + timeout
    quiet_polls = 0
    while quiet_polls < 2 and time.monotonic() < deadline:
        time.sleep(0.001)
        states = _worker_thread_states()
        if not states:
            return
        quiet_polls = quiet_polls + 1 if all(state == "S" for state in states) else 0


def _worker_thread_states() -> list[str]:
    """The scheduler state ("S" asleep, "R" running...) of each collective worker thread of this process."""
    states = []
    for path in glob.glob("/proc/self/task/*/stat"):
        try:
            with open(path, encoding="ascii", errors="replace") as file:
                name, _, rest = file.read().partition("(")[2].rpartition(")")
        except OSError:  # the thread ended meanwhile
            continue
        if name.startswith(_WORKER_THREAD_PREFIXES):
            states.append(rest.split()[0])
    return states
