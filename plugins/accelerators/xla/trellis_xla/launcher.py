"""Multi-device launch through torch_xla's launcher (`torch_xla.launch`).

torch_xla starts one replica per device: a process per TPU chip, or threads of one process where a
process addresses several devices (TPU v2/v3 cores, XLA's CPU device with CPU_NUM_DEVICES). Every
replica unpickles its own copy of the trainer and module, so threads share no training state. Rank 0
writes its return value, weights and progress to a folder this process reads back, as a spawn
launcher does; a replica that raises leaves its traceback there for the error raised here.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import threading
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from trellis.errors import ConfigurationError, TrellisError
from trellis_xla import hand_back

T = TypeVar("T")
OUTCOME_FILE = "outcome.pt"
_replica = threading.local()


class ReplicaFailedError(TrellisError, RuntimeError):
    """A replica of the launched group raised; the message holds its traceback."""


def in_replica() -> bool:
    """Whether this thread runs inside a replica started by XLALauncher."""
    return getattr(_replica, "active", False)


class XLALauncher:
    """Runs the trainer's function on every XLA device of this host and returns rank 0's result."""

    def __init__(self, num_devices: int, start_method: str = "spawn") -> None:
        self.num_devices, self.start_method = num_devices, start_method

    def launch(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        import torch_xla

        if torch_xla._XLAC._xla_runtime_is_initialized():
            raise ConfigurationError(
                f"devices={self.num_devices} starts one replica per XLA device through torch_xla's launcher, which "
                "needs a process whose XLA runtime has not started yet; this one already used an XLA device. Train "
                "on several devices from a fresh process, before anything touches an XLA tensor"
            )
        folder = tempfile.mkdtemp(prefix="trellis-xla-")
        try:
            work = pickle.dumps((function, args, kwargs))
            try:
                torch_xla.launch(_run_replica, args=(work, folder), start_method=self.start_method)
            except Exception as error:
                raise ReplicaFailedError(_failure_report(folder, error)) from error
            outcome_path = os.path.join(folder, OUTCOME_FILE)
            if not os.path.exists(outcome_path):
                raise ReplicaFailedError("rank 0 finished without writing its result back")
            outcome = torch.load(outcome_path, weights_only=False)  # written by our own rank 0
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        hand_back.restore(function, args, outcome["state"])
        return outcome["result"]


def _run_replica(rank: int, work: bytes, folder: str) -> None:
    function, args, kwargs = pickle.loads(work)
    _replica.active = True
    try:
        result = function(*args, **kwargs)
    except BaseException:
        with open(os.path.join(folder, f"error-rank{rank}.txt"), "w") as report:
            report.write(traceback.format_exc())
        raise
    finally:
        _replica.active = False
    if rank == 0:
        partial = os.path.join(folder, OUTCOME_FILE + ".partial")
        torch.save(hand_back.collect(function, args, result), partial)
        os.replace(partial, os.path.join(folder, OUTCOME_FILE))


def _failure_report(folder: str, error: BaseException) -> str:
    reports = sorted(name for name in os.listdir(folder) if name.startswith("error-rank"))
    if not reports:
        return f"a replica failed without a Python traceback ({type(error).__name__}: {error}); every replica stopped"
    first = reports[0]
    with open(os.path.join(folder, first)) as report:
        detail = report.read()
    rank = first.removeprefix("error-rank").removesuffix(".txt")
    return f"rank {rank} failed; every replica stopped. Rank {rank}:\n{detail}"
