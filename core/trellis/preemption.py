"""Preemption: SIGTERM or SIGUSR1 (SLURM's warning signal) save a checkpoint at the next step boundary.

The process then exits with PREEMPTED_EXIT_CODE (75, EX_TEMPFAIL: "try again"). Resuming with
`trainer.fit(model, ckpt_path="last")` continues exactly where the signal arrived. Under SLURM the job is
requeued first (through the cluster environment plugin).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

import torch

from trellis.roles import Strategy
from trellis.utils.rank_zero import rank_zero_info

PREEMPTED_EXIT_CODE = 75
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
#: in multi-process runs the ranks agree on stopping every this many steps (one small all-reduce).
SYNC_EVERY_N_STEPS = 10


class Preempted(SystemExit):
    """Raised after the preemption checkpoint is written; exits the process with PREEMPTED_EXIT_CODE."""

    def __init__(self, message: str) -> None:
        super().__init__(PREEMPTED_EXIT_CODE)
        self.message = message

    def __str__(self) -> str:
        return self.message


class PreemptionHandler:
    """Records preemption signals; `check()` at a step boundary turns one into checkpoint and exit."""

    def __init__(self, strategy: Strategy, checkpoint_path: str, save_checkpoint: Callable[[str], None]) -> None:
        self.strategy, self.checkpoint_path, self.save_checkpoint = strategy, checkpoint_path, save_checkpoint
        self.received: int | None = None
        #: in multi-process runs the ranks agree every this many steps; 0 in one process (no agreement needed).
        self.sync_every = SYNC_EVERY_N_STEPS if strategy.world_size > 1 else 0
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for number in PREEMPTION_SIGNALS:
                self._previous[number] = signal.signal(number, self._record)

    def uninstall(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _record(self, number: int, frame: Any) -> None:
        self.received = number

    def check(self, global_step: int) -> None:
        """Called at every training step boundary; cheap unless a signal arrived."""
        strategy = self.strategy
        if strategy.world_size > 1:
            if global_step % SYNC_EVERY_N_STEPS:
                return
            requested = float(strategy.reduce(torch.tensor(float(self.received is not None)), "sum")) > 0
        else:
            requested = self.received is not None
        if requested:
            self._stop(global_step)

    def _stop(self, global_step: int) -> None:
        from trellis.selection import detect_cluster_environment

        path = self.checkpoint_path
        self.save_checkpoint(path)
        environment = self.strategy.cluster_environment or detect_cluster_environment()
        requeued = environment is not None and self.strategy.is_global_zero and environment.requeue()
        name = signal.Signals(self.received).name if self.received else "a preemption signal on another rank"
        message = (f"received {name} at global step {global_step}: saved {path}"
                   + ("; the job was requeued" if requeued else "")
                   + f". Resume with trainer.fit(model, ckpt_path='last'); exiting with status {PREEMPTED_EXIT_CODE}.")
        rank_zero_info(message)
        raise Preempted(message)
