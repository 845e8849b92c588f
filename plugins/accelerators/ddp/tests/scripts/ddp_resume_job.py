"""A two-process DDP job for the kill-and-resume tests: resumes from <root>/checkpoints/last.ckpt when present.

Started as `python ddp_resume_job.py ROOT [torch|dcp|dcp-async]`, it re-runs itself for rank 1 (the DDP
script launcher). Rank 0 prints a line at each step, checkpoint write and validation batch so that the test can
kill the whole process group there. The last argument names the checkpoint IO plugin.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

import trellis
from trellis.callbacks import ModelCheckpoint
from trellis_csv import CSVLogger


class Job(trellis.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                                       torch.nn.Linear(32, 1))
        # Bulk (not broadcast by DDP: a parameter without gradient) so that a checkpoint write takes long enough
        # to be killed in the middle of.
        self.bulk = torch.nn.Parameter(torch.zeros(1_500_000), requires_grad=False)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        self._say(f"step {self.global_step}")
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))
        self._say("validating")

    def on_save_checkpoint(self, checkpoint):
        self._say("saving")

    def _say(self, line: str) -> None:
        if self.global_rank == 0:
            print(line, flush=True)

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.net.parameters(), lr=0.01)
        return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.9)}


def data(samples: int, seed: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, 8, generator=generator)
    return TensorDataset(x, x[:, :1] - x[:, 1:2])


def checkpoint_plugins(kind: str) -> list:
    if kind == "torch":
        return []
    from trellis_dcp import DCPCheckpointIO

    return [DCPCheckpointIO(asynchronous=kind == "dcp-async")]


def main(root: Path, kind: str) -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    trellis.seed_everything(0)
    last = root / "checkpoints" / "last.ckpt"
    if not last.exists() and os.environ.get("RANK", "0") == "0":  # killed before any checkpoint: start afresh
        shutil.rmtree(root / "lightning_logs", ignore_errors=True)
    trainer = trellis.Trainer(
        accelerator="cpu", strategy="ddp", devices=2, plugins=checkpoint_plugins(kind),
        max_epochs=3, val_check_interval=0.5, log_every_n_steps=1, enable_progress_bar=False,
        enable_model_summary=False, logger=CSVLogger(save_dir=root, version=0),
        callbacks=[ModelCheckpoint(dirpath=root / "checkpoints", save_top_k=0, save_last=True, every_n_train_steps=3)],
    )
    trainer.fit(Job(), DataLoader(data(320, 0), batch_size=8, shuffle=True), DataLoader(data(64, 1), batch_size=16),
                ckpt_path=last if last.exists() else None)
    if trainer.is_global_zero:
        torch.save(trainer.module.net.state_dict(), root / "final.pt")
        print("finished", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "torch")
