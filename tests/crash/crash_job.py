"""A training job the crash tests kill at awkward moments and resume with ckpt_path="last" in a new process.

    python crash_job.py ROOT STRATEGY        (STRATEGY: single_device, or ddp for two CPU processes)

Random augmentation in the main process (torch, python and numpy RNGs), dropout, shuffling, validation twice
per epoch, a checkpoint every 4 steps (so some land on an epoch's last batch), CSV and TensorBoard loggers in
their default versioned directories. It prints a line at each moment the tests kill it at.
"""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import numpy
import torch
from torch.utils.data import DataLoader, Dataset

import trellis
from trellis.callbacks import ModelCheckpoint
from trellis.plugin import Logger


class Augmented(Dataset):
    """Fixed samples, flipped and jittered by the global RNGs on every read (augmentation)."""

    def __init__(self, samples: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randn(samples, 8, generator=generator)
        self.y = self.x[:, :1] - self.x[:, 1:2]

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.x[index] + 0.1 * torch.randn(8)
        if random.random() < 0.5:
            x = x * -1.0
        return x + torch.from_numpy(numpy.random.normal(0.0, 0.01, 8)).float(), self.y[index]


class Job(trellis.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                                       torch.nn.Linear(32, 1))
        # Bulk so that a checkpoint write takes long enough to be killed in the middle of.
        self.register_buffer("bulk", torch.zeros(2_000_000))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        self.print(f"step {self.global_step}", flush=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if batch_idx + 1 == self.trainer.num_training_batches:
            self.print("last batch", flush=True)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))
        self.print("validating", flush=True)

    def on_save_checkpoint(self, checkpoint):
        self.print("saving", flush=True)

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=0.01)
        return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.9)}


def loggers(root: Path) -> list[Logger]:
    from trellis_csv import CSVLogger

    chosen: list[Logger] = [CSVLogger(save_dir=root)]
    if importlib.util.find_spec("trellis_tensorboard") is not None:
        from trellis_tensorboard import TensorBoardLogger

        chosen.append(TensorBoardLogger(save_dir=root))
    return chosen


def main(root: Path, strategy: str) -> None:
    torch.set_num_threads(1)
    trellis.seed_everything(0)
    processes = 2 if strategy == "ddp" else 1  # each process runs 12 batches an epoch
    trainer = trellis.Trainer(
        max_epochs=3, val_check_interval=0.5, log_every_n_steps=1, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=root, logger=loggers(root), strategy=strategy,
        devices=processes, accelerator="cpu",
        callbacks=[ModelCheckpoint(save_last=True, save_top_k=0, every_n_train_steps=4)],
    )
    trainer.fit(Job(), DataLoader(Augmented(192 * processes, 0), batch_size=16, shuffle=True),
                DataLoader(Augmented(64 * processes, 1), batch_size=32), ckpt_path="last")
    if trainer.is_global_zero:
        torch.save(trainer.lightning_module.net.state_dict(), root / "final.pt")
        (root / "log_dirs.txt").write_text("\n".join(logger.log_dir for logger in trainer.loggers))
        print("finished", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
