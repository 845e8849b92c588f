"""Training on one XLA device, or on every device of the host through torch_xla's launcher."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import Any, TypeVar

import torch

from trellis.errors import ConfigurationError, TrainingError
from trellis.roles import Launcher, Strategy
from trellis.roles.checkpoint_io import PathLike
from trellis_xla import graph
from trellis_xla.launcher import XLALauncher, in_replica

T = TypeVar("T")
REDUCE_OPS = ("mean", "sum", "max", "min")


class XLAStrategy(Strategy):
    """One replica per XLA device, data parallel; chosen by strategy="auto" with accelerator="xla".

    With several devices, torch_xla's launcher starts the replicas; each trains on its share of the
    data (a DistributedSampler), gradients are averaged by an XLA all-reduce recorded into the step's
    graph, and rank 0's weights and progress come back to the calling process. Checkpoints move every
    XLA tensor to the host in one batched transfer before rank 0 writes them, so a checkpoint saved on
    a TPU loads anywhere (map_location="cpu", no torch_xla).
    """

    name = "xla"

    def __init__(self) -> None:
        super().__init__()
        self._sync_gradients = True
        self._launcher: XLALauncher | None = None

    def connect(self, accelerator, precision, checkpoint_io, devices, num_nodes) -> None:  # noqa: ANN001
        if accelerator.device_type != "xla":
            raise ConfigurationError(
                f"strategy='xla' runs on XLA devices, but accelerator={accelerator.name!r} was chosen: "
                "pass accelerator='xla' (or 'tpu')"
            )
        if num_nodes != 1:
            raise ConfigurationError(
                f"trellis-xla trains on the devices of one host; num_nodes={num_nodes} is not supported: pass num_nodes=1"
            )
        if len(devices) > 1:
            accelerator.check_replica_devices(devices)
        super().connect(accelerator, precision, checkpoint_io, devices, num_nodes)

    @property
    def launcher(self) -> Launcher | None:
        if len(self.devices) == 1 or in_replica():
            return None
        if self._launcher is None:
            self._launcher = XLALauncher(len(self.devices))
        return self._launcher

    # -- topology ---------------------------------------------------------------------------
    @property
    def root_device(self) -> torch.device:
        if in_replica():
            import torch_xla

            return torch_xla.device()  # the device torch_xla's launcher gave this replica
        return super().root_device

    @property
    def global_rank(self) -> int:
        return _runtime().global_ordinal() if in_replica() else 0

    @property
    def local_rank(self) -> int:
        return _runtime().local_ordinal() if in_replica() else 0

    @property
    def world_size(self) -> int:
        return _runtime().world_size() if in_replica() else 1

    @property
    def distributed_sampler_kwargs(self) -> dict[str, int] | None:
        world_size = self.world_size
        return {"num_replicas": world_size, "rank": self.global_rank} if world_size > 1 else None

    # -- backward ---------------------------------------------------------------------------
    def backward(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer | None) -> None:
        try:
            super().backward(loss, optimizer)
        except RuntimeError as error:
            if "device_ready_queues_" not in str(error):
                raise
            raise TrainingError(
                "a backward pass ran in this process before torch_xla started its runtime, so torch's autograd "
                "engine has no queue for XLA devices. Start XLA first: put `import torch_xla; torch_xla.device()` "
                "at the top of the script, before any CPU or GPU training"
            ) from error
        if self._sync_gradients and self.world_size > 1:
            self._average_gradients(optimizer)

    def _average_gradients(self, optimizer: torch.optim.Optimizer | None) -> None:
        """Record the all-reduce that averages gradients over replicas (runs with the step's graph)."""
        import torch_xla.core.xla_model as xm

        if optimizer is not None:
            xm.reduce_gradients(optimizer)
            return
        gradients = [parameter.grad for parameter in self.module.parameters() if parameter.grad is not None]
        if gradients:
            xm.all_reduce(xm.REDUCE_SUM, gradients, scale=1.0 / self.world_size)

    def no_backward_sync(self, enabled: bool) -> contextlib.AbstractContextManager:
        """While accumulating: keep gradients local until the micro-batch that steps."""
        return self._gradients_kept_local() if enabled else contextlib.nullcontext()

    @contextlib.contextmanager
    def _gradients_kept_local(self) -> Iterator[None]:
        self._sync_gradients = False
        try:
            yield
        finally:
            self._sync_gradients = True

    # -- collectives --------------------------------------------------------------------------
    def reduce(self, value: Any, op: str = "mean") -> Any:
        if op not in REDUCE_OPS:
            raise ConfigurationError(f"reduce op {op!r} is unknown: use one of {REDUCE_OPS}")
        if self.world_size == 1:
            return value
        import torch_xla.core.xla_model as xm

        tensor = torch.as_tensor(value).to(self.root_device)
        if op == "mean" and not tensor.is_floating_point():
            tensor = tensor.float()
        xla_op = {"mean": xm.REDUCE_SUM, "sum": xm.REDUCE_SUM, "max": xm.REDUCE_MAX, "min": xm.REDUCE_MIN}[op]
        reduced = xm.all_reduce(xla_op, tensor, scale=1.0 / self.world_size if op == "mean" else 1.0)
        graph.sync()
        return reduced

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return tensor
        import torch_xla.core.xla_model as xm

        tensor = torch.as_tensor(tensor).to(self.root_device)
        gathered = xm.all_gather(tensor.unsqueeze(0), dim=0)
        graph.sync()
        return gathered

    def broadcast(self, obj: T, src: int = 0) -> T:
        """Rank `src`'s object on every replica: its bytes summed with zeros from the others."""
        if self.world_size == 1:
            return obj
        import torch_xla.core.xla_model as xm

        payload = b""
        if self.global_rank == src:
            buffer = io.BytesIO()
            torch.save(obj, buffer)
            payload = buffer.getvalue()
        length = xm.all_reduce(xm.REDUCE_SUM, torch.tensor([len(payload)], device=self.root_device))
        graph.sync()
        data = torch.zeros(int(length.item()), dtype=torch.int32)
        if payload:
            data = torch.frombuffer(bytearray(payload), dtype=torch.uint8).to(torch.int32)
        summed = xm.all_reduce(xm.REDUCE_SUM, data.to(self.root_device))
        graph.sync()
        received = summed.cpu().to(torch.uint8).numpy().tobytes()
        return torch.load(io.BytesIO(received), weights_only=False)  # sent by our own rank `src`

    def barrier(self, name: str | None = None) -> None:
        if self.world_size == 1:
            return
        self.reduce(torch.zeros(1), "sum").cpu()

    # -- checkpoints --------------------------------------------------------------------------
    def save_checkpoint(self, checkpoint: dict[str, Any], path: PathLike) -> None:
        if not (self.is_global_zero or self.checkpoint_io.sharded):
            return
        import torch_xla.core.xla_model as xm

        super().save_checkpoint(xm._maybe_convert_to_cpu(checkpoint), path)


def _runtime() -> Any:
    import torch_xla.runtime as xr

    return xr
