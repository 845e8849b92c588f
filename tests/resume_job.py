"""A training job for the kill-and-resume test: resumes from <root>/checkpoints/last.ckpt when present.

Prints a line at each step, checkpoint write and validation batch so the test can kill it there.
    python resume_job.py ROOT
"""

from __future__ import annotations

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
        # Bulk so that a checkpoint write takes long enough to be killed in the middle of.
        self.register_buffer("bulk", torch.zeros(3_000_000))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        print(f"step {self.global_step}", flush=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))
        print("validating", flush=True)

    def on_save_checkpoint(self, checkpoint):
        print("saving", flush=True)

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=0.01)
        return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.9)}


def data(samples: int, seed: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, 8, generator=generator)
    return TensorDataset(x, x[:, :1] - x[:, 1:2])


def main(root: Path) -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    trellis.seed_everything(0)
    last = root / "checkpoints" / "last.ckpt"
    trainer = trellis.Trainer(
        max_epochs=3, val_check_interval=0.5, log_every_n_steps=1, enable_progress_bar=False,
        enable_model_summary=False, logger=CSVLogger(save_dir=root, version=0),
        callbacks=[ModelCheckpoint(dirpath=root / "checkpoints", save_top_k=0, save_last=True, every_n_train_steps=3)],
    )
    trainer.fit(Job(), DataLoader(data(320, 0), batch_size=16, shuffle=True), DataLoader(data(64, 1), batch_size=32),
                ckpt_path=last if last.exists() else None)
    torch.save(trainer.module.net.state_dict(), root / "final.pt")
    print("finished", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
