"""strategy="ddp": one process per device, gradients averaged by torch DistributedDataParallel."""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from trellis.errors import ConfigurationError
from trellis.plugin import DEFAULT_TIMEOUT, ClusterEnvironment, ParallelStrategy, StepRunner, TrainingSettings

if TYPE_CHECKING:
    from trellis.plugin import OptimizerSetup

#: device types torch.nn.SyncBatchNorm synchronises on while training (besides the private-use backend).
SYNC_BATCHNORM_DEVICE_TYPES = ("cuda", "hpu", "xpu")


class DDPStrategy(ParallelStrategy):
    """Data parallel over `devices` x `num_nodes` processes, on any accelerator with a process-group backend.

    Processes come from the cluster launcher that started this one (torchrun, srun, mpirun, ...) or,
    when none is detected, from re-running this script for the other local ranks.
    """

    name = "ddp"

    def __init__(
        self,
        *,
        timeout: float | datetime.timedelta = DEFAULT_TIMEOUT,
        find_unused_parameters: bool = False,
        static_graph: bool = False,
        sync_batchnorm: bool = False,
        cluster_environment: ClusterEnvironment | None = None,
        **ddp_kwargs: Any,
    ) -> None:
        super().__init__(timeout=timeout, cluster_environment=cluster_environment)
        self.sync_batchnorm = sync_batchnorm
        self.ddp_kwargs = {"find_unused_parameters": find_unused_parameters, "static_graph": static_graph,
                           **ddp_kwargs}

    # -- model ------------------------------------------------------------------------------
    def setup(self, module: torch.nn.Module, build_optimizers: Callable[[], OptimizerSetup] | None, *,
              settings: TrainingSettings = TrainingSettings()) -> OptimizerSetup | None:
        self.training_settings = settings
        module = self.precision.convert_module(module.to(self.root_device))
        if self.sync_batchnorm:
            module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
            if build_optimizers is not None:
                _check_sync_batchnorm_trains_on(module, self.root_device)
        self.module = module
        self.model = self.wrap_module(module) if build_optimizers is not None else module
        return build_optimizers() if build_optimizers is not None else None

    def wrap_module(self, module: torch.nn.Module) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        device = self.root_device
        device_ids = [device.index] if device.index is not None else None
        return DistributedDataParallel(StepRunner(module), device_ids=device_ids, **self.ddp_kwargs)

    def run_step(self, method: str, *args: Any) -> Any:
        if method != "training_step" or self.model is self.module:
            return super().run_step(method, *args)
        with self.precision.forward_context(self.accelerator.device_type):
            return self.model(method, *args)

    def no_backward_sync(self, enabled: bool) -> contextlib.AbstractContextManager:
        if enabled and self.model is not self.module and hasattr(self.model, "no_sync"):
            return self.model.no_sync()
        return contextlib.nullcontext()

    def teardown(self) -> None:
        """Unwrap the module; the process group stays for the next stage and is left at exit."""
        self.model = self.module
        super().teardown()


class DDPSpawnStrategy(DDPStrategy):
    """DDP with every rank started by torch.multiprocessing "spawn" (needs a picklable module and data)."""

    name = "ddp_spawn"
    start_method = "spawn"


class DDPNotebookStrategy(DDPStrategy):
    """DDP with every rank forked from this process: works in notebooks, where there is no script to re-run."""

    name = "ddp_notebook"
    start_method = "fork"


def _check_sync_batchnorm_trains_on(module: torch.nn.Module, device: torch.device) -> None:
    """torch's SyncBatchNorm refuses to train on some devices (the CPU among them): say so before the first step."""
    supported = (*SYNC_BATCHNORM_DEVICE_TYPES, torch._C._get_privateuse1_backend_name())
    if device.type in supported or not any(isinstance(m, torch.nn.SyncBatchNorm) for m in module.modules()):
        return
    raise ConfigurationError(
        f"sync_batchnorm=True, but torch's SyncBatchNorm trains only on {', '.join(supported)} devices and this run "
        f"is on {device.type!r}: drop sync_batchnorm (each process then keeps its own batch statistics), or train on "
        "one of those devices"
    )
