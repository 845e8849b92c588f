"""A small regression trained with Trellis under a distributed strategy (run as a script by the tests)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

import trellis
from trellis.plugin import load_plugin

SAMPLES, FEATURES, BATCH = 64, 8, 4


def dataset() -> TensorDataset:
    generator = torch.Generator().manual_seed(1234)
    inputs = torch.randn(SAMPLES, FEATURES, generator=generator)
    targets = (inputs @ torch.randn(FEATURES, 1, generator=generator)
               + 0.1 * torch.randn(SAMPLES, 1, generator=generator))
    return TensorDataset(inputs, targets)


def network() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(FEATURES, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


class Regression(trellis.Module):
    def __init__(self, fail_rank: int = -1, kill_rank: int = -1) -> None:
        super().__init__()
        self.net = network()
        self.fail_rank, self.kill_rank = fail_rank, kill_rank
        self.seen = 0

    def training_step(self, batch, batch_idx):
        inputs, targets = batch
        if self.global_rank in (self.fail_rank, self.kill_rank) and batch_idx == 2:
            print(f"failing at {time.time()}", file=sys.stderr, flush=True)
        if self.global_rank == self.fail_rank and batch_idx == 2:
            raise ValueError(f"deliberate failure on rank {self.global_rank}")
        if self.global_rank == self.kill_rank and batch_idx == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        self.seen += len(inputs)
        loss = torch.nn.functional.mse_loss(self.net(inputs), targets)
        self.log("train_loss", loss, sync_dist=True, on_epoch=True, on_step=False)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--strategy", default="ddp")
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--num-nodes", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--accumulate", type=int, default=1)
    parser.add_argument("--fail-rank", type=int, default=-1)
    parser.add_argument("--kill-rank", type=int, default=-1)
    parser.add_argument("--timeout", type=float, default=60.0)
    arguments = parser.parse_args()
    module = Regression(arguments.fail_rank, arguments.kill_rank)
    strategy = load_plugin("strategy", arguments.strategy)(timeout=arguments.timeout)
    trainer = trellis.Trainer(
        accelerator="cpu", strategy=strategy, devices=arguments.devices, num_nodes=arguments.num_nodes,
        max_epochs=arguments.epochs, accumulate_grad_batches=arguments.accumulate, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=os.path.dirname(arguments.out),
    )
    trainer.fit(module, DataLoader(dataset(), batch_size=BATCH, shuffle=True))
    gathered = module.all_gather(torch.tensor([trainer.global_rank]))
    report = {
        "pid": os.getpid(), "rank": trainer.global_rank, "world_size": trainer.world_size, "seen": module.seen,
        "gathered": gathered.flatten().tolist(), "train_loss": float(trainer.callback_metrics["train_loss"]),
        "global_step": trainer.global_step,
    }
    with open(f"{arguments.out}.rank{trainer.global_rank}.json", "w") as file:
        json.dump(report, file)
    if trainer.is_global_zero:
        torch.save(module.net.state_dict(), arguments.out)


if __name__ == "__main__":
    main()
