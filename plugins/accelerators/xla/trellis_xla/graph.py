"""Cutting the lazy graph at step boundaries, safely for replicas that are threads of one process.

torch_xla runs one replica per device in threads when a process addresses several devices (XLA's CPU
device with CPU_NUM_DEVICES, TPU v2/v3). Two threads compiling the same graph at once get two
executables whose collectives carry different ids, and XLA's CPU runtime then waits forever for the
other replica (pytorch/xla#9089). Compiling one thread at a time makes the second a cache hit of the
first, so both run one executable and their collectives meet.
"""

from __future__ import annotations

import threading

_compile_lock = threading.Lock()


def sync() -> None:
    """Cut the graph recorded on this replica's device and run it asynchronously."""
    import torch_xla
    import torch_xla.core.xla_model as xm
    import torch_xla.runtime as xr

    if xr.addressable_device_count() <= 1:
        torch_xla.sync()
        return
    # Wait for this device's previous graph outside the lock: it may be waiting in a collective for a
    # replica that needs the lock to start its own.
    xm.wait_device_ops(xm.xla_real_devices([torch_xla.device()]))
    with _compile_lock:
        torch_xla.sync()
