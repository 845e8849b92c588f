"""Throughput: batches, samples, items and FLOPs per second over a window of recent updates (the metrics of
Lightning's Throughput, which ThroughputMonitor logs)."""

from __future__ import annotations

from collections import deque

from trellis.utilities.rank_zero import rank_zero_warn


class _IncreasingWindow(deque):
    """The last `maxlen` values of a counter that must grow with every update."""

    def append(self, value: float) -> None:
        if self and value <= self[-1]:
            raise ValueError(f"Expected the value to increase, last: {self[-1]}, current: {value}")
        super().append(value)


class Throughput:
    """Call `update` with running totals (elapsed time, batches, samples, optionally lengths and the FLOPs of
    the last batch) and `compute` for the metrics: totals (`time`, `batches`, `samples`, `lengths`), and once
    `window_size` updates are in, per-device rates `device/batches_per_sec`, `device/samples_per_sec`,
    `device/items_per_sec`, `device/flops_per_sec`, `device/mfu` (with `available_flops`), plus the global
    rates without the prefix when `world_size` > 1."""

    def __init__(self, available_flops: float | None = None, world_size: int = 1, window_size: int = 100,
                 separator: str = "/", using_sparse_model: bool | None = None,
                 sparse_cuda_acceleration_factor: float = 2.0) -> None:
        if sparse_cuda_acceleration_factor < 1.0:
            raise ValueError("sparse acceleration factor cannot reduce peak FLOPs")
        if world_size < 1 or window_size < 2:
            raise ValueError(f"Throughput needs world_size >= 1 and window_size >= 2, got {world_size}, {window_size}")
        if using_sparse_model is None and available_flops is not None:
            rank_zero_warn("MFU assumes dense model FLOPs (no sparsity acceleration). Set 'using_sparse_model=True' "
                           "for MFU to use sparse FLOPs.")
        if using_sparse_model and available_flops is not None:
            available_flops *= sparse_cuda_acceleration_factor
        self.available_flops = available_flops
        self.separator = separator
        self.world_size = world_size
        self._time: _IncreasingWindow = _IncreasingWindow(maxlen=window_size)
        self._batches: _IncreasingWindow = _IncreasingWindow(maxlen=window_size)
        self._samples: _IncreasingWindow = _IncreasingWindow(maxlen=window_size)
        self._lengths: _IncreasingWindow = _IncreasingWindow(maxlen=window_size)
        self._flops: deque[float] = deque(maxlen=window_size)

    def update(self, *, time: float, batches: int, samples: int, lengths: int | None = None,
               flops: float | None = None) -> None:
        """Running totals of this device (`flops`: of the batch since the last update)."""
        self._time.append(time)
        if samples < batches:
            raise ValueError(f"Expected samples ({samples}) to be greater or equal than batches ({batches})")
        self._batches.append(batches)
        self._samples.append(samples)
        if lengths is not None:
            if lengths < samples:
                raise ValueError(f"Expected lengths ({lengths}) to be greater or equal than samples ({samples})")
            self._lengths.append(lengths)
            if len(self._samples) != len(self._lengths):
                raise RuntimeError(f"If lengths are passed ({len(self._lengths)}), there needs to be the same number "
                                   f"of samples ({len(self._samples)})")
        if flops is not None:
            self._flops.append(flops * self.world_size)

    def compute(self) -> dict[str, int | float]:
        metrics: dict[str, int | float] = {"time": self._time[-1], "batches": self._batches[-1],
                                           "samples": self._samples[-1]}
        if self._lengths:
            metrics["lengths"] = self._lengths[-1]
        several = self.world_size > 1
        device = f"device{self.separator}"
        if len(self._time) == self._time.maxlen:
            elapsed = self._time[-1] - self._time[0]
            batches_per_sec = (self._batches[-1] - self._batches[0]) / elapsed
            samples_per_sec = (self._samples[-1] - self._samples[0]) / elapsed
            metrics[f"{device}batches_per_sec"] = batches_per_sec
            metrics[f"{device}samples_per_sec"] = samples_per_sec
            if several:
                metrics["batches_per_sec"] = batches_per_sec * self.world_size
                metrics["samples_per_sec"] = samples_per_sec * self.world_size
            if len(self._lengths) == self._lengths.maxlen:
                items_per_sec = (self._lengths[-1] - self._lengths[0]) / elapsed
                metrics[f"{device}items_per_sec"] = items_per_sec
                if several:
                    metrics["items_per_sec"] = items_per_sec * self.world_size
        if len(self._flops) == self._flops.maxlen:
            flops_per_sec = (sum(self._flops) - self._flops[0]) / (self._time[-1] - self._time[0])
            if several:
                metrics["flops_per_sec"] = flops_per_sec
            metrics[f"{device}flops_per_sec"] = flops_per_sec / self.world_size
            if self.available_flops:
                metrics[f"{device}mfu"] = flops_per_sec / self.world_size / self.available_flops
        return metrics

    def reset(self) -> None:
        for window in (self._time, self._batches, self._samples, self._lengths, self._flops):
            window.clear()
