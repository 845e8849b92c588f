"""Trainer(profiler="simple" | "pytorch" | object): where the time of a fit goes.

A profiler is a hook plugin: the Trainer registers it with the other hook implementers and hands it the
hook manager, so the simple profiler times every hook call through pluggy's call monitoring.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from typing import Any

from trellis.errors import ConfigurationError
from trellis.utils.rank_zero import rank_zero_info


class Profiler:
    """Base of profilers: `attach` receives the hook manager; the report goes to stdout and a file."""

    filename = "profile.txt"

    def __init__(self, dirpath: str | os.PathLike | None = None) -> None:
        self.dirpath = os.fspath(dirpath) if dirpath is not None else None

    def attach(self, hooks: Any) -> None:
        """Called with the Trainer's hook manager before each run."""

    def report(self) -> str:
        raise NotImplementedError

    def _write_report(self, trainer: Any) -> None:
        if not trainer.is_global_zero:
            return
        text = self.report()
        directory = self.dirpath or trainer.log_dir
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, self.filename), "w") as file:
            file.write(text + "\n")
        rank_zero_info(text)


class SimpleProfiler(Profiler):
    """Total and mean time per hook call and per training step."""

    filename = "profile-simple.txt"

    def __init__(self, dirpath: str | os.PathLike | None = None) -> None:
        super().__init__(dirpath)
        self.durations: dict[str, list[float]] = defaultdict(list)
        self._started: dict[str, float] = {}
        self._step_started = 0.0

    def attach(self, hooks: Any) -> None:
        hooks.add_hookcall_monitoring(self._before, self._after)

    def _before(self, hook_name: str, implementations: Any, kwargs: Any) -> None:
        self._started[hook_name] = time.perf_counter()

    def _after(self, outcome: Any, hook_name: str, implementations: Any, kwargs: Any) -> None:
        started = self._started.pop(hook_name, None)
        if started is not None:
            self.durations[f"hook {hook_name}"].append(time.perf_counter() - started)

    def on_train_batch_start(self) -> None:
        self._step_started = time.perf_counter()

    def on_train_batch_end(self) -> None:
        self.durations["training step (forward, backward, optimizer)"].append(time.perf_counter() - self._step_started)

    def on_fit_end(self, trainer: Any) -> None:
        self._write_report(trainer)

    def report(self) -> str:
        rows = sorted(self.durations.items(), key=lambda item: -sum(item[1]))
        width = max([len(name) for name, _ in rows] + [6])
        lines = [f"{'action':{width}}  {'calls':>7}  {'total s':>9}  {'mean ms':>9}"]
        for name, values in rows:
            total = sum(values)
            lines.append(f"{name:{width}}  {len(values):7d}  {total:9.4f}  {1e3 * total / len(values):9.4f}")
        return "simple profiler report\n" + "\n".join(lines)


class PyTorchProfiler(Profiler):
    """torch.profiler over a window of training steps; writes a Chrome trace and an operator table."""

    filename = "profile-pytorch.txt"

    def __init__(self, dirpath: str | os.PathLike | None = None, wait: int = 1, warmup: int = 1,
                 active: int = 5) -> None:
        super().__init__(dirpath)
        self.wait, self.warmup, self.active = wait, warmup, active
        self.profile: Any = None
        self.trace_path = ""

    def on_train_start(self, trainer: Any) -> None:
        import torch.profiler

        self.trace_path = os.path.join(self.dirpath or trainer.log_dir, "trace.json")
        self.profile = torch.profiler.profile(
            schedule=torch.profiler.schedule(wait=self.wait, warmup=self.warmup, active=self.active, repeat=1),
            on_trace_ready=self._export,
        )
        self.profile.start()

    def on_train_batch_end(self) -> None:
        if self.profile is not None:
            self.profile.step()

    def on_train_end(self, trainer: Any) -> None:
        if self.profile is not None:
            self.profile.stop()
            self._write_report(trainer)

    def _export(self, profile: Any) -> None:
        os.makedirs(os.path.dirname(self.trace_path), exist_ok=True)
        profile.export_chrome_trace(self.trace_path)

    def report(self) -> str:
        table = self.profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=20)
        return f"pytorch profiler report (Chrome trace: {self.trace_path})\n{table}"


PROFILERS = {"simple": SimpleProfiler, "pytorch": PyTorchProfiler}


def resolve_profiler(profiler: str | Profiler | None) -> Profiler | None:
    if profiler is None or isinstance(profiler, Profiler):
        return profiler
    if profiler in PROFILERS:
        return PROFILERS[profiler]()
    raise ConfigurationError(f"profiler={profiler!r} is unknown: use 'simple', 'pytorch' or a Profiler object")
