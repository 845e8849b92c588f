"""Training on one XLA device, with checkpoints written from host copies of the device tensors."""

from __future__ import annotations

from typing import Any

import torch

from trellis.errors import ConfigurationError, TrainingError
from trellis.roles import Strategy
from trellis.roles.checkpoint_io import PathLike


class XLAStrategy(Strategy):
    """One process on one XLA device; chosen by strategy="auto" with accelerator="xla".

    Checkpoints move every XLA tensor to the host in one batched transfer before the checkpoint IO
    writes them, so a checkpoint saved on a TPU loads anywhere (map_location="cpu", no torch_xla).
    """

    name = "xla"

    def connect(self, accelerator, precision, checkpoint_io, devices, num_nodes) -> None:  # noqa: ANN001
        if accelerator.device_type != "xla":
            raise ConfigurationError(
                f"strategy='xla' runs on XLA devices, but accelerator={accelerator.name!r} was chosen: "
                "pass accelerator='xla' (or 'tpu')"
            )
        if len(devices) != 1 or num_nodes != 1:
            raise ConfigurationError(
                f"trellis-xla trains on one XLA device; devices={devices} and num_nodes={num_nodes} ask for more, "
                "and multi-core launch is not implemented yet: pass devices=1"
            )
        super().connect(accelerator, precision, checkpoint_io, devices, num_nodes)

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

    def save_checkpoint(self, checkpoint: dict[str, Any], path: PathLike) -> None:
        import torch_xla.core.xla_model as xm

        super().save_checkpoint(xm._maybe_convert_to_cpu(checkpoint), path)
