"""A tiny regression model and data shared by the in-process tests and the two-process script."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

import trellis

FEATURES = 8
SAMPLES = 64


def dataset(seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(SAMPLES, FEATURES, generator=generator)
    true_weights = torch.randn(FEATURES, 1, generator=generator)
    return TensorDataset(inputs, inputs @ true_weights + 0.01 * torch.randn(SAMPLES, 1, generator=generator))


def loader(batch_size: int = 8) -> DataLoader:
    """A fixed order (no shuffle), so a hand-written loop can see exactly the same batches."""
    return DataLoader(dataset(), batch_size=batch_size, shuffle=False)


class Regressor(trellis.Module):
    """Two linear layers; with `lazy=True` they are created in configure_model (ZeRO-3 sharded init)."""

    def __init__(self, lr: float = 0.05, lazy: bool = False, optimizer: str = "sgd") -> None:
        """`optimizer`: "sgd", "adam", "cpu_adam" (DeepSpeedCPUAdam) or "none" (the DeepSpeed config's)."""
        super().__init__()
        self.save_hyperparameters()
        self.net: torch.nn.Module | None = None
        self.losses: list[float] = []
        if not lazy:
            self.net = build_net()

    def configure_model(self) -> None:
        if self.net is None:
            self.net = build_net()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        loss = torch.nn.functional.mse_loss(self(inputs).float(), targets.float())
        self.losses.append(float(loss))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        inputs, targets = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self(inputs).float(), targets.float()))

    def configure_optimizers(self) -> Any:
        if self.hparams.optimizer == "none":
            return None
        if self.hparams.optimizer == "adam":
            return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        if self.hparams.optimizer == "cpu_adam":  # what ZeRO-Offload steps on the CPU (a C++ op, built on first use)
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            return DeepSpeedCPUAdam(self.parameters(), lr=self.hparams.lr)
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def build_net() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(FEATURES, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def trainer(strategy: Any, root: str, **flags: Any) -> trellis.Trainer:
    defaults: dict[str, Any] = dict(
        accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0, default_root_dir=root,
    )
    return trellis.Trainer(strategy=strategy, **{**defaults, **flags})


def weights(trainer_: trellis.Trainer) -> dict[str, torch.Tensor]:
    """Full float32 weights, gathered by the strategy (every process must call this under ZeRO-3)."""
    return {name: tensor.float().clone() for name, tensor in trainer_.strategy.module_state_dict().items()}


def straight_and_resumed(strategy_factory: Any, root: str, epochs: int = 2, devices: int = 1,
                         **module_args: Any) -> dict[str, Any]:
    """Train `epochs` epochs in one go, and again stopped after the first epoch and resumed from its checkpoint."""
    module = Regressor(**module_args)
    straight = trainer(strategy_factory(), root, max_epochs=epochs, devices=devices)
    straight.fit(module, loader())
    first = Regressor(**module_args)
    interrupted = trainer(strategy_factory(), root, max_epochs=1, devices=devices)
    interrupted.fit(first, loader())
    path = f"{root}/interrupted.ckpt"
    interrupted.save_checkpoint(path)
    second = Regressor(**module_args)
    resumed = trainer(strategy_factory(), root, max_epochs=epochs, devices=devices)
    resumed.fit(second, loader(), ckpt_path=path)
    return {
        "losses": module.losses,
        "straight_step": straight.global_step,
        "straight_weights": weights(straight),
        "resumed_step": resumed.global_step,
        "resumed_weights": weights(resumed),
        "resumed_losses": first.losses + second.losses,
        "checkpoint": path,
    }
