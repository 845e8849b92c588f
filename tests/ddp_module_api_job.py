"""Two DDP processes reading trainer.log_dir and gathering with gradients (run as a script by the tests)."""

from __future__ import annotations

import json
import sys

import torch
from torch.utils.data import DataLoader, TensorDataset

import trellis


class Reporting(trellis.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.report: dict = {}

    def training_step(self, batch, batch_idx):
        rank = self.global_rank
        mine = torch.tensor([rank + 1.0], requires_grad=True)
        gathered = self.all_gather(mine, sync_grads=True)
        (gathered.sum() * (rank + 1)).backward()
        plain = self.all_gather({"rank": torch.tensor(rank), "number": 2.5})
        if rank == 0:
            _ = self.logger.log_dir  # rank zero settles its version and reserves the directory first
        self.trainer.strategy.barrier()
        self.report = {"rank": rank, "log_dir": self.trainer.log_dir, "own_version_dir": self.logger.log_dir,
                       "gathered": gathered.detach().flatten().tolist(), "gradient": mine.grad.tolist(),
                       "plain_ranks": plain["rank"].tolist(), "plain_numbers": plain["number"].tolist()}
        return self.layer(batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def main(root: str) -> None:
    module = Reporting()
    trainer = trellis.Trainer(accelerator="cpu", strategy="ddp", devices=2, max_steps=1, logger="csv",
                              default_root_dir=root, enable_checkpointing=False, enable_progress_bar=False,
                              enable_model_summary=False)
    trainer.fit(module, DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=2))
    with open(f"{root}/rank{module.report['rank']}.json", "w") as file:
        json.dump(module.report, file)


if __name__ == "__main__":
    main(sys.argv[1])
