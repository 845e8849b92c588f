"""A third party's strategy over torch.distributed, built on trellis.parallel.ParallelStrategy alone: it averages
gradients itself with the inherited collectives. Started with plain `python third_party_strategy.py OUT_DIR`."""

from __future__ import annotations

import json
import os
import sys

import torch
from torch.utils.data import DataLoader, TensorDataset

import trellis
from trellis.parallel import ParallelStrategy


class AverageGradients(ParallelStrategy):
    """Data parallel without DDP: each process's gradients are averaged over the group after backward."""

    name = "average_gradients"

    def backward(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer | None) -> None:
        super().backward(loss, optimizer)
        for parameter in self.module.parameters():
            parameter.grad = self.reduce(parameter.grad, "mean")


class Probe(trellis.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        inputs, targets = batch
        return torch.nn.functional.mse_loss(self.net(inputs), targets)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def main(out_dir: str) -> None:
    generator = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(32, 4, generator=generator), torch.randn(32, 1, generator=generator))
    strategy = AverageGradients(timeout=60)
    trainer = trellis.Trainer(accelerator="cpu", strategy=strategy, devices=2, max_epochs=1, logger=False,
                              enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    module = Probe()
    trainer.fit(module, DataLoader(data, batch_size=4))
    rank = trainer.global_rank
    report = {
        "rank": rank,
        "pid": os.getpid(),
        "sum": float(strategy.reduce(torch.tensor(float(rank + 1)), "sum")),
        "max": float(strategy.reduce(torch.tensor(float(rank + 1)), "max")),
        "gathered": strategy.all_gather(torch.tensor([rank])).flatten().tolist(),
        "broadcast": strategy.broadcast({"from": rank}, src=1),
        "weights": module.net.weight.detach().flatten().tolist(),
    }
    strategy.barrier()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle)


if __name__ == "__main__":
    main(sys.argv[1])
