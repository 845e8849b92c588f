"""The tiny training run the kit drives plugins through: a linear regression on CPU tensors."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

import trellis

#: batches per epoch; the resume check stops inside an epoch so loop progress must travel too.
BATCHES_PER_EPOCH = 4
TOTAL_STEPS = 6
STEPS_BEFORE_CHECKPOINT = 3


class TinyRegression(trellis.Module):
    """y = x·w learned by one linear layer with SGD; logs its loss every step."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        loss = torch.nn.functional.mse_loss(self.layer(inputs), targets.to(self.layer.weight.dtype))
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def make_loader() -> DataLoader:
    """Fixed data in a fixed order: two runs see the same batches."""
    generator = torch.Generator().manual_seed(1234)
    inputs = torch.randn(BATCHES_PER_EPOCH * 4, 4, generator=generator)
    targets = inputs @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    return DataLoader(TensorDataset(inputs, targets), batch_size=4)


def trainer_flags(root_dir: str | os.PathLike, **flags: Any) -> dict[str, Any]:
    """Quiet Trainer flags for the kit: no progress bar, summary, checkpoint callback or default logger."""
    defaults = {
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "logger": False,
        "num_sanity_val_steps": 0,
        "log_every_n_steps": 1,
        "default_root_dir": os.fspath(root_dir),
    }
    return {**defaults, **flags}


@dataclass
class RunResult:
    """A seeded module and its Trainer; `fit` runs it."""

    trainer: trellis.Trainer
    module: TinyRegression
    initial_weights: dict[str, torch.Tensor]

    def fit(self, ckpt_path: str | None = None) -> RunResult:
        self.trainer.fit(self.module, make_loader(), ckpt_path=ckpt_path)
        return self

    def final_weights(self) -> dict[str, torch.Tensor]:
        return {key: value.detach().cpu().clone() for key, value in self.module.state_dict().items()}


def prepare(flags: dict[str, Any], max_steps: int) -> RunResult:
    """A fresh TinyRegression, seeded so that two runs start from the same weights, and its Trainer."""
    trellis.seed_everything(7)
    module = TinyRegression()
    initial = {key: value.detach().clone() for key, value in module.state_dict().items()}
    return RunResult(trellis.Trainer(max_steps=max_steps, **flags), module, initial)


def fit(flags: dict[str, Any], max_steps: int, ckpt_path: str | None = None) -> RunResult:
    """Seeded fit of a fresh TinyRegression for `max_steps` steps."""
    return prepare(flags, max_steps).fit(ckpt_path)
