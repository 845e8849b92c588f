"""XLA training in one process: one device, or SPMD over every device of the host.

Checkpoints are written from host copies of the device tensors, so they load without torch_xla.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch

from trellis.plugin import ConfigurationError, PathLike, Strategy, TrainingError

if TYPE_CHECKING:
    import torch_xla.distributed.spmd as xs


class XLAStrategy(Strategy):
    """One process driving one XLA device, or all of them through SPMD; chosen by strategy="auto".

    With several devices (`devices=N`, `tpu_cores=N`) the process runs SPMD data parallelism: every batch
    the dataloader yields is the global batch and is split on its first dimension over the N devices;
    the compiler all-reduces the gradients. Losses and weights are those of one device on the same batch.

    Args:
        shard_weights: also split every parameter (and the optimizer state) over the devices, as torch_xla's
            FSDPv2 does, for models that do not fit one device (alias strategy="xla_fsdp").

    Checkpoints hold full weights gathered to the host in one batched transfer: they load on CPU without
    torch_xla (map_location="cpu"), on one XLA device, or into a sharded run over any number of devices.
    """

    name = "xla"

    def __init__(self, shard_weights: bool = False) -> None:
        super().__init__()
        self.shard_weights = shard_weights
        self._mesh: xs.Mesh | None = None

    @property
    def spmd(self) -> bool:
        """Whether this run partitions its graphs over a device mesh (several devices, or sharded weights)."""
        return len(self.devices) > 1 or self.shard_weights

    def connect(self, accelerator, precision, checkpoint_io, devices, num_nodes) -> None:  # noqa: ANN001
        if accelerator.device_type != "xla":
            raise ConfigurationError(
                f"strategy='xla' runs on XLA devices, but accelerator={accelerator.name!r} was chosen: "
                "pass accelerator='xla' (or 'tpu')"
            )
        if num_nodes != 1:
            raise ConfigurationError(
                f"num_nodes={num_nodes}: trellis-xla runs SPMD over the devices of one host; multi-host SPMD "
                "(TPU pods) is not implemented yet: pass num_nodes=1"
            )
        super().connect(accelerator, precision, checkpoint_io, devices, num_nodes)
        visible = accelerator.device_count()
        if self.spmd and sorted(devices) != list(range(visible)):
            raise ConfigurationError(
                f"XLA SPMD runs over every device the XLA runtime sees ({visible} here), but devices={devices} "
                f"{'with shard_weights=True ' if self.shard_weights else ''}was asked for: pass devices={visible} "
                "(or 'auto'), or devices=1 for one device without SPMD (on XLA's CPU device, CPU_NUM_DEVICES sets "
                "how many devices there are)"
            )

    def setup_environment(self) -> None:
        if self.spmd and self._mesh is None:
            from trellis_xla import spmd

            self._mesh = spmd.start(self.devices)
        super().setup_environment()

    @property
    def root_device(self) -> torch.device:
        """Under SPMD every tensor lives on the one virtual device that stands for the whole mesh."""
        return self.accelerator.device(0 if self.spmd else self.devices[0])

    def wrap_module(self, module: torch.nn.Module) -> torch.nn.Module:
        """The module itself: SPMD needs no wrapper, only sharding annotations on the parameters."""
        if self.shard_weights:
            from trellis_xla import spmd

            spmd.shard_weights(module, self._mesh)
        return module

    def process_dataloader(self, dataloader: Iterable, training: bool = False) -> Iterable:
        if self._mesh is None:
            return super().process_dataloader(dataloader, training)
        from trellis_xla import spmd

        return spmd.sharded_loader(dataloader, self.root_device, self._mesh)

    def backward(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer | None) -> None:
        try:
            super().backward(loss, optimizer)
        except RuntimeError as error:
            if "device_ready_queues_" not in str(error):
                raise
            raise TrainingError(
                "a backward pass ran in this process before torch_xla started its runtime, so torch's autograd "
                "engine has no queue for XLA devices. Start XLA first: put `import torch_xla; torch_xla.device()` "
                "at the top of the script, before any CPU or GPU training (for several devices, "
                "`torch_xla.runtime.use_spmd()` before it)"
            ) from error

    def load_optimizer_state_dict(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        """Loaded optimizer state arrives unannotated (the parameters keep theirs): shard it like them."""
        super().load_optimizer_state_dict(optimizer, state)
        if self.shard_weights:
            from trellis_xla import spmd

            spmd.shard_optimizer_state(optimizer, self._mesh)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: PathLike) -> None:
        import torch_xla.core.xla_model as xm

        super().save_checkpoint(xm._maybe_convert_to_cpu(checkpoint), path)


def xla_fsdp() -> XLAStrategy:
    """strategy="xla_fsdp": SPMD with weights and optimizer state sharded over the devices (FSDPv2 style)."""
    return XLAStrategy(shard_weights=True)
