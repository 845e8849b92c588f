"""DeviceStatsMonitor: log the accelerator's device statistics (memory, utilisation) around batches."""

from __future__ import annotations

import importlib.util
from typing import Any

from trellis.callbacks.base import Callback
from trellis.errors import ConfigurationError
from trellis.utilities.rank_zero import rank_zero_warn


class DeviceStatsMonitor(Callback):
    """Logs `DeviceStatsMonitor.<hook>/<stat>` at the start and end of training, validation and test batches, at
    the steps the loggers log at (every `log_every_n_steps`). The statistics come from the accelerator plugin
    (`Accelerator.device_stats`); CPU statistics (cpu_percent, cpu_vm_percent, cpu_swap_percent, from psutil)
    are added on a CPU device, or on any device with `cpu_stats=True`. `filter_keys` keeps only those stats."""

    def __init__(self, cpu_stats: bool | None = None, filter_keys: set[str] | None = None) -> None:
        self._cpu_stats = cpu_stats
        self._filter_keys = filter_keys

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage != "fit":
            return
        if not trainer.loggers:
            raise ConfigurationError("Cannot use `DeviceStatsMonitor` callback with `Trainer(logger=False)`: pass "
                                     "logger=True (or another logger), or remove the callback")
        device = trainer.strategy.root_device
        wants_cpu = self._cpu_stats or (self._cpu_stats is None and device.type == "cpu")
        if wants_cpu and importlib.util.find_spec("psutil") is None:
            raise ModuleNotFoundError("`DeviceStatsMonitor` cannot log CPU stats as `psutil` is not installed: "
                                      "`pip install psutil`, or pass cpu_stats=False")
        if self._filter_keys is not None:
            unknown = self._filter_keys - self._stats(trainer).keys()
            if unknown:
                rank_zero_warn("`DeviceStatsMonitor` filter_keys contains keys not found in device stats and will be "
                               f"ignored: {unknown}")

    def _stats(self, trainer: Any) -> dict[str, float]:
        device = trainer.strategy.root_device
        stats = dict(trainer.strategy.accelerator.device_stats(device))
        if self._cpu_stats or (self._cpu_stats is None and device.type == "cpu"):
            stats.update(cpu_stats())
        if self._filter_keys is not None:
            stats = {key: value for key, value in stats.items() if key in self._filter_keys}
        return stats

    def _log(self, trainer: Any, hook: str) -> None:
        loop = trainer.fit_loop
        if not trainer.settings.logs_step_metrics(loop.batches_that_stepped, trainer.should_stop):
            return
        if self._cpu_stats is False and trainer.strategy.root_device.type == "cpu":
            return
        stats = self._stats(trainer)
        if stats and trainer.is_global_zero:
            prefix = f"{type(self).__qualname__}.{hook}/"
            for logger in trainer.loggers:
                logger.log_metrics({prefix + key: value for key, value in stats.items()},
                                   step=loop.batches_that_stepped)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._log(trainer, "on_train_batch_start")

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._log(trainer, "on_train_batch_end")

    def on_validation_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int,
                                  dataloader_idx: int = 0) -> None:
        self._log(trainer, "on_validation_batch_start")

    def on_validation_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        self._log(trainer, "on_validation_batch_end")

    def on_test_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int,
                            dataloader_idx: int = 0) -> None:
        self._log(trainer, "on_test_batch_start")

    def on_test_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        self._log(trainer, "on_test_batch_end")


def cpu_stats() -> dict[str, float]:
    """System-wide CPU, memory and swap use in percent (psutil)."""
    import psutil

    return {"cpu_vm_percent": psutil.virtual_memory().percent, "cpu_percent": psutil.cpu_percent(),
            "cpu_swap_percent": psutil.swap_memory().percent}
