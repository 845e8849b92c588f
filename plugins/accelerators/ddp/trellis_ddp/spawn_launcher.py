"""Launching through torch.multiprocessing, for notebooks and interactive sessions.

Every rank runs in a new process and this one waits, so that a failing rank raises here (with its
traceback) instead of killing the notebook kernel. Rank 0 sends back the return value, the trained
weights and the trainer's progress (the kernel's `handoff()` of the call), which `adopt()` loads into this
process's objects.
"""

from __future__ import annotations

import io
import os
import pickle
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from trellis.errors import TrellisError
from trellis_ddp.environment import PARENT_VARIABLE
from trellis_ddp.ports import free_port, require_free

T = TypeVar("T")
POLL_SECONDS = 0.05
TERMINATE_GRACE_SECONDS = 5.0


class RankFailedError(TrellisError, RuntimeError):
    """A process of the group raised; the message holds its traceback."""


class SpawnLauncher:
    """Starts `num_devices` processes with the given start method ("spawn" or "fork") and waits for them."""

    def __init__(self, num_devices: int, start_method: str) -> None:
        self.num_devices, self.start_method = num_devices, start_method

    def launch(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        import torch.multiprocessing as mp

        address = os.environ.get("MASTER_ADDR", "127.0.0.1")
        if "MASTER_PORT" in os.environ:
            port = int(os.environ["MASTER_PORT"])
            require_free(address, port)
        else:
            port = free_port(address)
        context = mp.get_context(self.start_method)
        messages = context.SimpleQueue()
        # Spawned processes get a copy made by plain pickle: torch.multiprocessing would move the parameters
        # into shared memory, and every rank would then step the same weights.
        work = pickle.dumps((function, args, kwargs)) if self.start_method == "spawn" else (function, args, kwargs)
        processes = [
            context.Process(
                target=_run_rank,
                args=(rank, self.num_devices, address, port, os.getpid(), messages, work),
                name=f"trellis-rank-{rank}",
            )
            for rank in range(self.num_devices)
        ]
        for process in processes:
            process.start()
        outcome = _wait(processes, messages)
        function.adopt(outcome["state"])
        return outcome["result"]


def _run_rank(rank: int, world_size: int, address: str, port: int, parent: int, messages: Any, work: Any) -> None:
    os.environ.update({
        "MASTER_ADDR": address, "MASTER_PORT": str(port), "WORLD_SIZE": str(world_size), "NODE_RANK": "0",
        "LOCAL_RANK": str(rank), "RANK": str(rank), PARENT_VARIABLE: str(parent),
    })
    function, args, kwargs = pickle.loads(work) if isinstance(work, bytes) else work
    try:
        result = function(*args, **kwargs)
    except BaseException:
        text = traceback.format_exc()
        print(f"[trellis] rank {rank} raised:\n{text}", file=sys.stderr, flush=True)
        messages.put(("error", rank, text))
        sys.exit(1)
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    if rank == 0:
        messages.put(("done", _to_bytes({"result": result, "state": function.handoff()})))


def _wait(processes: list, messages: Any) -> dict[str, Any]:
    """Wait for every rank; on the first failure stop the others and raise with its traceback."""
    outcome: dict[str, Any] | None = None
    errors: dict[int, str] = {}
    while True:
        while not messages.empty():
            message = messages.get()
            if message[0] == "done":
                outcome = torch.load(io.BytesIO(message[1]), weights_only=False)  # written by our own rank 0
            else:
                errors[message[1]] = message[2]
        failed = [(rank, p.exitcode) for rank, p in enumerate(processes) if p.exitcode not in (None, 0)]
        if failed or errors:
            _terminate(processes)
            while not messages.empty():
                message = messages.get()
                if message[0] == "error":
                    errors[message[1]] = message[2]
            rank = next(iter(errors)) if errors else failed[0][0]  # the first to report is the cause
            detail = errors.get(rank, f"it exited with code {dict(failed).get(rank)} without a Python traceback")
            raise RankFailedError(f"rank {rank} of {len(processes)} failed; every rank was stopped. Rank {rank}:\n{detail}")
        if all(p.exitcode == 0 for p in processes) and outcome is not None:
            return outcome
        if all(p.exitcode == 0 for p in processes) and messages.empty():
            raise RankFailedError("rank 0 exited without sending its result back")
        time.sleep(POLL_SECONDS)


def _to_bytes(payload: Any) -> bytes:
    """Serialised here, so no tensor is shared through a file descriptor that dies with this process."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def _terminate(processes: list) -> None:
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + TERMINATE_GRACE_SECONDS
    for process in processes:
        process.join(timeout=max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()
