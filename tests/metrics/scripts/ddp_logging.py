"""Two CPU processes under strategy="ddp" log the same names with and without sync_dist, and a torchmetrics
metric; each rank writes what it logged and what callback_metrics shows (run by test_distributed_logging.py).

    python ddp_logging.py OUT_PREFIX
"""

from __future__ import annotations

import json
import sys

import torch
import torchmetrics
from torch.utils.data import DataLoader, TensorDataset

import trellis


class Logs(trellis.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.mean = torchmetrics.MeanMetric()
        self.logged: list[tuple[float, int]] = []

    def training_step(self, batch, batch_idx):
        (x,) = batch
        value = float(self.global_rank * 100 + batch_idx) + x.sum().item()
        self.logged.append((value, len(x)))
        self.log("synced", value, on_step=True, on_epoch=True, sync_dist=True)
        self.log("peak", value, on_step=False, on_epoch=True, sync_dist=True, reduce_fx="max")
        self.log("local", value, on_step=False, on_epoch=True)
        self.mean(torch.tensor(value))
        self.log("metric", self.mean, on_epoch=True)
        return self.layer(x).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def main(prefix: str) -> None:
    data = TensorDataset(torch.arange(14, dtype=torch.float32).unsqueeze(1))  # 7 per rank: batches of 3, 3, 1
    module = Logs()
    trainer = trellis.Trainer(accelerator="cpu", strategy="ddp", devices=2, max_epochs=1, logger=False,
                              enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, DataLoader(data, batch_size=3))
    report = {"rank": trainer.global_rank, "logged": module.logged,
              "callback": {name: float(value) for name, value in trainer.callback_metrics.items()}}
    with open(f"{prefix}.rank{trainer.global_rank}.json", "w") as file:
        json.dump(report, file)


if __name__ == "__main__":
    main(sys.argv[1])
