"""The strategy role: how work is spread over processes and devices.

The base class is the single-process implementation; distributed strategies override what they
change (launching, wrapping, collectives, which rank writes).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

import torch

from trellis.errors import ConfigurationError
from trellis.roles.precision import Precision

if TYPE_CHECKING:
    from trellis.optim import OptimizerSetup
    from trellis.roles.accelerator import Accelerator
    from trellis.roles.checkpoint_io import CheckpointIO, PathLike
    from trellis.roles.cluster_environment import ClusterEnvironment

T = TypeVar("T")


@dataclass(frozen=True)
class TrainingSettings:
    """The Trainer's flags a strategy may need to train: the kernel passes them to `Strategy.setup`.

    The loop itself accumulates and clips; a strategy that does either inside its own engine (DeepSpeed)
    configures the engine from these. The defaults are the Trainer's.
    """

    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: str = "norm"


class LaunchedCall(Protocol):
    """One Trainer entry-point call, as a launcher runs it (the kernel's StageCall).

    Launchers whose workers are other processes (spawn) call `handoff()` in rank zero after the call and
    `adopt(state)` with it in the launching process, so the user's objects there end as trained as the
    workers'; a launcher never reaches into the Trainer.
    """

    def __call__(self) -> Any: ...

    def handoff(self) -> dict[str, Any]:
        """What the launching process needs (weights, progress, metrics), as CPU tensors and plain values."""
        ...

    def adopt(self, state: dict[str, Any]) -> None:
        """Load what rank zero's handoff() returned."""
        ...


class Launcher(Protocol):
    """Starts the processes a strategy needs and runs the call in each (this one included); returns its result."""

    def launch(self, call: LaunchedCall) -> Any: ...


class StepRunner(torch.nn.Module):
    """A wrapper whose forward calls a step method of the module (`runner("training_step", batch, i)`).

    Distributed wrappers (DDP, DeepSpeed's engine) hook their synchronisation into forward; wrapping this
    makes them see every step method as the forward pass.
    """

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, method: str, *args: Any) -> Any:
        return getattr(self.module, method)(*args)


class Strategy:
    """Placement, wrapping, backward, optimizer step, collectives and checkpoint writing."""

    name: ClassVar[str] = ""

    def __init__(self) -> None:
        self.accelerator: Accelerator | None = None
        self.precision: Precision = Precision()
        self.checkpoint_io: CheckpointIO | None = None
        self.devices: list[int] = [0]
        self.num_nodes: int = 1
        #: the user's module, unwrapped.
        self.module: torch.nn.Module | None = None
        #: what forward passes go through (the module itself, or a DDP/FSDP/DeepSpeed wrapper).
        self.model: torch.nn.Module | None = None
        #: who launched this process and where its ranks come from; None for one process nobody launched.
        #: A distributed strategy chooses one in `connect` unless `Trainer(plugins=[...])` gave one.
        self.cluster_environment: ClusterEnvironment | None = None
        #: the Trainer's flags as of the last `setup`.
        self.training_settings: TrainingSettings = TrainingSettings()

    # -- wiring -----------------------------------------------------------------------------
    def connect(
        self,
        accelerator: Accelerator,
        precision: Precision,
        checkpoint_io: CheckpointIO,
        devices: list[int],
        num_nodes: int,
    ) -> None:
        """Receive the chosen plugins; raise ConfigurationError for combinations it cannot run."""
        self.accelerator, self.precision, self.checkpoint_io = accelerator, precision, checkpoint_io
        self.devices, self.num_nodes = devices, num_nodes

    @property
    def launcher(self) -> Launcher | None:
        """The launcher to start extra processes with, or None to run in this process alone."""
        return None

    def setup_environment(self) -> None:
        """Join the process group (distributed strategies) and set up this process's device."""
        assert self.accelerator is not None, "connect() first"
        self.accelerator.setup_device(self.root_device)

    # -- topology ---------------------------------------------------------------------------
    @property
    def root_device(self) -> torch.device:
        assert self.accelerator is not None, "connect() first"
        return self.accelerator.device(self.devices[self.local_rank])

    @property
    def global_rank(self) -> int:
        return 0

    @property
    def local_rank(self) -> int:
        return 0

    @property
    def node_rank(self) -> int:
        return 0

    @property
    def world_size(self) -> int:
        return 1

    @property
    def is_global_zero(self) -> bool:
        return self.global_rank == 0

    @property
    def distributed_sampler_kwargs(self) -> dict[str, int] | None:
        """num_replicas and rank for a DistributedSampler, None when data is not split."""
        return None

    # -- model and optimizers -----------------------------------------------------------------
    def model_init_context(self) -> contextlib.AbstractContextManager[object]:
        """Context around `Module.configure_model`: sharding strategies create layers already sharded there."""
        return contextlib.nullcontext()

    def setup(
        self,
        module: torch.nn.Module,
        build_optimizers: Callable[[], OptimizerSetup] | None,
        *,
        settings: TrainingSettings = TrainingSettings(),
    ) -> OptimizerSetup | None:
        """Place and wrap the module, then build the optimizers over its final parameters.

        `build_optimizers` is None for evaluation. Strategies that shard (FSDP) wrap before it runs;
        strategies that own the optimizer (DeepSpeed) build their engine from its result. `settings`
        (kept as `training_settings`) are the Trainer's accumulation and clipping flags.
        """
        self.training_settings = settings
        self.module = self.precision.convert_module(module.to(self.root_device))
        self.model = self.wrap_module(self.module)
        return build_optimizers() if build_optimizers is not None else None

    def wrap_module(self, module: torch.nn.Module) -> torch.nn.Module:
        """The object forward passes go through; the module itself on one device."""
        return module

    def run_step(self, method: str, *args: Any) -> Any:
        """Call a step method of the module (training_step, ...) inside the precision context."""
        assert self.accelerator is not None, "connect() first"
        with self.precision.forward_context(self.accelerator.device_type):
            return getattr(self.module, method)(*args)

    def step_function(self, method: str) -> Callable[..., Any]:
        """What the loops call for every batch of a stage: `run_step(method, ...)` bound once.

        Where neither the strategy nor the precision adds anything (one device, no autocast) that is the
        module's own method, so a step costs no call beyond the user's.
        """
        if (type(self).run_step is Strategy.run_step
                and type(self.precision).forward_context is Precision.forward_context):
            step: Callable[..., Any] = getattr(self.module, method)
            return step
        return functools.partial(self.run_step, method)

    def backward(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer | None) -> None:
        self.precision.backward(loss, self.module)

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Callable[[], Any] | None = None) -> Any:
        return self.precision.optimizer_step(optimizer, closure)

    def zero_grad(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad()

    def clip_gradients(self, optimizer: torch.optim.Optimizer, value: float, algorithm: str = "norm") -> None:
        """Clip the optimizer's gradients by total norm or by value, after unscaling them."""
        self.precision.unscale_gradients(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if algorithm == "norm":
            torch.nn.utils.clip_grad_norm_(params, value)
        elif algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, value)
        else:
            raise ConfigurationError(f"gradient_clip_algorithm={algorithm!r} is unknown: use 'norm' or 'value'")

    def no_backward_sync(self, enabled: bool) -> contextlib.AbstractContextManager[object]:
        """Context that skips gradient synchronisation (while accumulating gradients)."""
        return contextlib.nullcontext()

    # -- data -------------------------------------------------------------------------------
    def batch_to_device(self, batch: Any, device: torch.device | None = None) -> Any:
        """Move a batch onto this process's device (`device`: that device, when the caller has it at hand)."""
        assert self.accelerator is not None, "connect() first"
        return self.accelerator.batch_to_device(batch, device or self.root_device)

    def process_dataloader(self, dataloader: Iterable[Any], training: bool = False) -> Iterable[Any]:
        """The loader the loop iterates; `training` is True for the training loader of fit (its batch size is
        the micro batch size a strategy may need)."""
        assert self.accelerator is not None, "connect() first"
        return self.accelerator.wrap_dataloader(dataloader, self.root_device)

    # -- collectives --------------------------------------------------------------------------
    def reduce(self, value: Any, op: str = "mean") -> Any:
        """Reduce a tensor over all processes ("mean" or "sum"); identity in one process."""
        return value

    def all_gather(self, tensor: torch.Tensor, sync_grads: bool = False) -> torch.Tensor:
        """Stack a tensor from every process along a new first dimension (one process: as is); with
        `sync_grads`, gradients flow back to each process's tensor."""
        return tensor

    def broadcast(self, obj: T, src: int = 0) -> T:
        return obj

    def barrier(self, name: str | None = None) -> None:
        """Wait for every process."""

    # -- checkpoints --------------------------------------------------------------------------
    def module_state_dict(self) -> dict[str, Any]:
        assert self.module is not None, "setup() first"
        return self.module.state_dict()

    def checkpoint_weights(self, weights_only: bool = False) -> dict[str, Any]:
        """What a checkpoint stores under "state_dict": the module's weights.

        A strategy whose save_checkpoint writes the weights itself (DeepSpeed's engine, shard by shard)
        returns a placeholder here, so that saving never gathers full weights only to discard them.
        `weights_only`: the checkpoint is to hold the weights alone.
        """
        return self.module_state_dict()

    def load_module_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        assert self.module is not None, "setup() first"
        self.module.load_state_dict(state, strict=strict)

    def optimizer_state_dict(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        return optimizer.state_dict()

    def load_optimizer_state_dict(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        optimizer.load_state_dict(state)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: PathLike) -> None:
        """Write a checkpoint: global rank zero writes a full-state one, every rank takes part in a sharded one."""
        assert self.checkpoint_io is not None, "connect() first"
        if self.is_global_zero or self.checkpoint_io.sharded:
            self.checkpoint_io.save_checkpoint(checkpoint, path)

    def load_checkpoint(self, path: PathLike, weights_only: bool = True) -> dict[str, Any]:
        assert self.checkpoint_io is not None, "connect() first"
        return self.checkpoint_io.load_checkpoint(path, weights_only=weights_only)

    def remove_checkpoint(self, path: PathLike) -> None:
        assert self.checkpoint_io is not None, "connect() first"
        if self.is_global_zero:
            self.checkpoint_io.remove_checkpoint(path)

    def teardown(self) -> None:
        """Finish pending writes, leave the process group, release devices."""
        try:
            if self.checkpoint_io is not None:
                self.checkpoint_io.teardown()
        finally:
            if self.accelerator is not None:
                self.accelerator.teardown()


class SingleDeviceStrategy(Strategy):
    """One process, one device: the plain training loop."""

    name = "single_device"

    def connect(self, accelerator: Accelerator, precision: Precision, checkpoint_io: CheckpointIO,
                devices: list[int], num_nodes: int) -> None:
        if len(devices) != 1 or num_nodes != 1:
            raise ConfigurationError(
                f"strategy='single_device' runs on one device, but devices={devices} and num_nodes={num_nodes} "
                "were asked for: pass devices=1, or a distributed strategy such as strategy='ddp'"
            )
        super().connect(accelerator, precision, checkpoint_io, devices, num_nodes)
