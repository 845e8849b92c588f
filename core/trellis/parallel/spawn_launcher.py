"""Launching through torch.multiprocessing, for notebooks and interactive sessions.

Every rank runs in a new process and this one waits, so that a failing rank raises here (with its
traceback, shown once) instead of killing the notebook kernel. Rank 0 sends back the return value and the
call's `handoff()` (the kernel's StageCall: trained weights, progress, metrics), which `adopt()` loads into
this process's objects; the launcher never reaches into the Trainer.
"""

from __future__ import annotations

import io
import os
import pickle
import signal
import time
import traceback
from typing import TYPE_CHECKING, Any

import torch

from trellis.errors import TrellisError
from trellis.parallel.environment import LAUNCHER_PID_VARIABLE
from trellis.parallel.failures import SETTLE_SECONDS, describe_exit
from trellis.parallel.ports import rendezvous_port
from trellis.utils.process_group import leave_process_group

if TYPE_CHECKING:
    from trellis.roles.strategy import LaunchedCall

POLL_SECONDS = 0.02


class RankFailedError(TrellisError, RuntimeError):
    """A process of the group failed; the message holds its traceback."""


class SpawnLauncher:
    """Starts `num_devices` processes with the given start method ("spawn" or "fork") and waits for them."""

    def __init__(self, num_devices: int, start_method: str) -> None:
        self.num_devices, self.start_method = num_devices, start_method

    def launch(self, call: LaunchedCall) -> Any:
        import torch.multiprocessing as mp

        address = os.environ.get("MASTER_ADDR", "127.0.0.1")
        port = rendezvous_port(address, check_free=True)
        context = mp.get_context(self.start_method)
        messages = context.SimpleQueue()
        # Spawned processes get a copy made by plain pickle: torch.multiprocessing would move the parameters
        # into shared memory, and every rank would then step the same weights.
        work = pickle.dumps(call) if self.start_method == "spawn" else call
        processes = [
            context.Process(  # type: ignore[attr-defined]  # every start method's context has Process
                target=_run_rank,
                args=(rank, self.num_devices, address, port, os.getpid(), messages, work),
                name=f"trellis-rank-{rank}",
            )
            for rank in range(self.num_devices)
        ]
        try:
            for process in processes:
                process.start()
            outcome = _wait(processes, messages)
        except BaseException:  # an interrupt while waiting (a notebook's stop button) leaves no rank behind
            _kill(processes)
            raise
        call.adopt(outcome["state"])
        return outcome["result"]


def _run_rank(rank: int, world_size: int, address: str, port: int, parent: int, messages: Any, work: Any) -> None:
    os.environ.update({
        "MASTER_ADDR": address, "MASTER_PORT": str(port), "WORLD_SIZE": str(world_size), "NODE_RANK": "0",
        "LOCAL_RANK": str(rank), "RANK": str(rank), LAUNCHER_PID_VARIABLE: str(parent),
    })
    call = pickle.loads(work) if isinstance(work, bytes) else work
    try:
        result = call()
    except BaseException:
        messages.put(("error", rank, traceback.format_exc()))  # the launching process shows the cause's
        os._exit(1)
    leave_process_group()
    if rank == 0:
        messages.put(("done", _to_bytes({"result": result, "state": call.handoff()})))


def _wait(processes: list, messages: Any) -> dict[str, Any]:
    """Wait for every rank; on a failure stop them all and raise with the traceback of the one that failed first.

    A rank that fails first reports first: the others fail only once its exit breaks their collectives.
    A rank that died without a report (killed, crashed in native code) is the cause over any report.
    """
    outcome: dict[str, Any] | None = None
    errors: dict[int, str] = {}
    failed_at: float | None = None
    while True:
        exit_codes = [process.exitcode for process in processes]  # before the queue: ranks report, then exit
        outcome = _read_reports(messages, errors) or outcome
        silent = [rank for rank, code in enumerate(exit_codes) if code not in (None, 0) and rank not in errors]
        if (errors or silent) and failed_at is None:
            failed_at = time.monotonic()
        if failed_at is not None and (silent or time.monotonic() - failed_at >= SETTLE_SECONDS):
            _kill(processes)
            raise _failure(processes, errors, silent)
        if all(code == 0 for code in exit_codes):
            if outcome is None:
                raise RankFailedError("rank 0 exited without sending its result back")
            return outcome
        time.sleep(POLL_SECONDS)


def _read_reports(messages: Any, errors: dict[int, str]) -> dict[str, Any] | None:
    """Collect the error reports waiting in the queue; rank 0's outcome when it is among them."""
    outcome = None
    while not messages.empty():
        message = messages.get()
        if message[0] == "done":
            outcome = torch.load(io.BytesIO(message[1]), weights_only=False)  # written by our own rank 0
        else:
            errors.setdefault(message[1], message[2])
    return outcome


def _failure(processes: list, errors: dict[int, str], silent: list[int]) -> RankFailedError:
    size = len(processes)
    if silent:
        rank = silent[0]
        return RankFailedError(
            f"rank {rank} of {size} {describe_exit(processes[rank].exitcode)} without a Python traceback; every "
            "rank was stopped"
        )
    rank = next(iter(errors))
    return RankFailedError(f"rank {rank} of {size} failed; every rank was stopped. Rank {rank}:\n{errors[rank]}")


def _to_bytes(payload: Any) -> bytes:
    """Serialised here, so no tensor is shared through a file descriptor that dies with this process."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def _kill(processes: list) -> None:
    """The other ranks are stuck in collectives that lost a peer, or unwinding from them: end them now."""
    for process in processes:
        if process.is_alive():
            os.kill(process.pid, signal.SIGKILL)
    for process in processes:
        process.join()
