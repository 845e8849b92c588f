"""Shared helpers: tiny modules and data, real plugin distributions on a fresh path."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

import trellis


class TinyRegressor(trellis.Module):
    """A two-layer MLP on random regression data."""

    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def regression_data(samples: int = 256, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, 8, generator=generator)
    y = x[:, :1] * 0.5 - x[:, 1:2] + 0.1 * torch.randn(samples, 1, generator=generator)
    return TensorDataset(x, y)


def loader(samples: int = 256, batch_size: int = 32, shuffle: bool = False) -> DataLoader:
    return DataLoader(regression_data(samples), batch_size=batch_size, shuffle=shuffle)


def quiet_trainer(**flags) -> trellis.Trainer:
    defaults = dict(logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    return trellis.Trainer(**{**defaults, **flags})


def make_distribution(
    root: Path, name: str, entry_points: dict[str, dict[str, str]], modules: dict[str, str], version: str = "1.0"
) -> None:
    """Write a real installed distribution (dist-info with METADATA and entry_points.txt) under `root`."""
    dist_info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    sections = [f"[{group}]\n" + "".join(f"{key} = {value}\n" for key, value in names.items())
                for group, names in entry_points.items()]
    (dist_info / "entry_points.txt").write_text("\n".join(sections))
    for filename, source in modules.items():
        (root / filename).write_text(textwrap.dedent(source))


def run_python(code: str, extra_path: Path | None = None, env: dict[str, str] | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter (optionally with `extra_path` on sys.path)."""
    environment = {**os.environ, **(env or {})}
    if extra_path is not None:
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(extra_path), environment.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=environment, timeout=timeout)
