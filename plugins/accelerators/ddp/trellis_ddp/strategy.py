"""strategy="ddp": one process per device, gradients averaged by torch DistributedDataParallel."""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch

from trellis.errors import ConfigurationError
from trellis.roles.strategy import StepRunner
from trellis.utils.process_group import leave_process_group_at_exit
from trellis.roles import ClusterEnvironment, Launcher, Strategy
from trellis_ddp.environment import LocalEnvironment

if TYPE_CHECKING:
    from trellis.optim import OptimizerSetup

T = TypeVar("T")
#: torch's own default collective timeout.
DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)
REDUCE_OPS = ("mean", "sum", "max", "min")
#: device types torch.nn.SyncBatchNorm synchronises on while training (besides the private-use backend).
SYNC_BATCHNORM_DEVICE_TYPES = ("cuda", "hpu", "xpu")



class DDPStrategy(Strategy):
    """Data parallel over `devices` x `num_nodes` processes, on any accelerator with a process-group backend.

    Processes come from the cluster launcher that started this one (torchrun, srun, mpirun, ...) or,
    when none is detected, from re-running this script for the other local ranks.
    """

    name = "ddp"
    #: None: re-run the script for the other ranks; "spawn"/"fork": torch.multiprocessing.
    start_method: ClassVar[str | None] = None

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
        super().__init__()
        self.timeout = timeout if isinstance(timeout, datetime.timedelta) else datetime.timedelta(seconds=timeout)
        self.sync_batchnorm = sync_batchnorm
        self.ddp_kwargs = {"find_unused_parameters": find_unused_parameters, "static_graph": static_graph,
                           **ddp_kwargs}
        self.cluster_environment = cluster_environment
        self._launcher: Launcher | None = None

    # -- wiring -----------------------------------------------------------------------------
    def connect(self, accelerator, precision, checkpoint_io, devices, num_nodes) -> None:  # noqa: ANN001
        super().connect(accelerator, precision, checkpoint_io, devices, num_nodes)
        if accelerator.process_group_backend is None:
            raise ConfigurationError(
                f"strategy={self.name!r} needs a process-group backend, and accelerator {accelerator.name!r} declares "
                "none (its process_group_backend is None): choose another accelerator, or set process_group_backend "
                "on it"
            )
        if num_nodes < 1:
            raise ConfigurationError(f"num_nodes={num_nodes}: pass 1 or more")
        if self.cluster_environment is None:
            self.cluster_environment = self._choose_environment()
        self.cluster_environment.validate_settings(len(devices), num_nodes)

    def _choose_environment(self) -> ClusterEnvironment:
        from trellis.selection import detect_cluster_environment

        local = LocalEnvironment(len(self.devices), self.num_nodes)
        if local.launched():
            return local
        detected = detect_cluster_environment()
        if detected is not None and self.start_method is not None:
            raise ConfigurationError(
                f"strategy={self.name!r} starts its own processes, but {detected.name} already started this one: "
                "use strategy='ddp'"
            )
        return detected if detected is not None else local

    @property
    def launcher(self) -> Launcher | None:
        if self.cluster_environment.creates_processes_externally:
            return None
        if self._launcher is None:
            self._launcher = self._make_launcher()
        return self._launcher

    def _make_launcher(self) -> Launcher:
        if self.start_method is None:
            from trellis_ddp.script_launcher import ScriptLauncher

            return ScriptLauncher(len(self.devices), self.num_nodes)
        from trellis_ddp.spawn_launcher import SpawnLauncher

        if self.num_nodes != 1:
            raise ConfigurationError(
                f"strategy={self.name!r} runs on one machine; for num_nodes={self.num_nodes} use strategy='ddp' under "
                "torchrun or srun"
            )
        return SpawnLauncher(len(self.devices), self.start_method)

    def setup_environment(self) -> None:
        import torch.distributed as dist

        from trellis_ddp.script_launcher import watch_parent

        super().setup_environment()
        if dist.is_initialized():
            return
        if isinstance(self.cluster_environment, LocalEnvironment):
            watch_parent()
        environment = self.cluster_environment
        os.environ.setdefault("MASTER_ADDR", environment.main_address)
        os.environ.setdefault("MASTER_PORT", str(environment.main_port))
        _init_process_group(self.accelerator.process_group_backend, self.global_rank, self.world_size, self.timeout)

    # -- topology ---------------------------------------------------------------------------
    @property
    def global_rank(self) -> int:
        return self.cluster_environment.global_rank() if self.cluster_environment else 0

    @property
    def local_rank(self) -> int:
        return self.cluster_environment.local_rank() if self.cluster_environment else 0

    @property
    def node_rank(self) -> int:
        return self.cluster_environment.node_rank() if self.cluster_environment else 0

    @property
    def world_size(self) -> int:
        return self.cluster_environment.world_size() if self.cluster_environment else 1

    @property
    def distributed_sampler_kwargs(self) -> dict[str, int]:
        return {"num_replicas": self.world_size, "rank": self.global_rank}

    # -- model ------------------------------------------------------------------------------
    def setup(self, module: torch.nn.Module, build_optimizers: Callable[[], OptimizerSetup] | None) -> OptimizerSetup | None:
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

    # -- collectives --------------------------------------------------------------------------
    def reduce(self, value: Any, op: str = "mean") -> Any:
        import torch.distributed as dist

        if op not in REDUCE_OPS:
            raise ConfigurationError(f"reduce op {op!r} is unknown: use one of {REDUCE_OPS}")
        if not dist.is_initialized():
            return value
        tensor = torch.as_tensor(value, device=self.root_device).detach().clone()
        if op == "mean" and not tensor.is_floating_point():
            tensor = tensor.float()
        torch_op = {"mean": dist.ReduceOp.SUM, "sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX,
                    "min": dist.ReduceOp.MIN}[op]
        dist.all_reduce(tensor, op=torch_op)
        return tensor / self.world_size if op == "mean" else tensor

    def all_gather(self, tensor: torch.Tensor, sync_grads: bool = False) -> torch.Tensor:
        """sync_grads=True: gradients flow back to each process's tensor (torch.distributed.nn's all_gather)."""
        import torch.distributed as dist

        if not dist.is_initialized():
            return tensor
        tensor = torch.as_tensor(tensor, device=self.root_device).contiguous()
        if sync_grads:
            return _GatherWithGradients.apply(tensor)
        gathered = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(gathered, tensor)
        return torch.stack(gathered)

    def broadcast(self, obj: T, src: int = 0) -> T:
        import torch.distributed as dist

        if not dist.is_initialized():
            return obj
        holder = [obj]
        dist.broadcast_object_list(holder, src=src)
        return holder[0]

    def barrier(self, name: str | None = None) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()

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


def _init_process_group(backend: str, rank: int, world_size: int, timeout: datetime.timedelta) -> None:
    """Join the group through MASTER_ADDR/MASTER_PORT (env://, which also reuses torchrun's store)."""
    import torch.distributed as dist

    from trellis_ddp.ports import port_in_use_message

    try:
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world_size, timeout=timeout)
    except dist.DistNetworkError as error:
        if "EADDRINUSE" in str(error) or "already in use" in str(error).lower():
            raise ConfigurationError(
                port_in_use_message(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]))
            ) from error
        raise
    leave_process_group_at_exit()


class _GatherWithGradients(torch.autograd.Function):
    """all_gather whose backward hands each process the gradients every process computed for its tensor."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, tensor)
        return torch.stack(gathered)

    @staticmethod
    def backward(ctx: Any, gradient: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        gradient = gradient.contiguous()
        dist.all_reduce(gradient)
        return gradient[dist.get_rank()]
