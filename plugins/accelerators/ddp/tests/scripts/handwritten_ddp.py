"""The same training written by hand with torch DistributedDataParallel (the parity reference)."""

from __future__ import annotations

import contextlib
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ddp_regression import BATCH, dataset, network
from torch.utils.data import DataLoader, DistributedSampler


def train_loop(model: torch.nn.parallel.DistributedDataParallel, rank: int, world_size: int, epochs: int,
               accumulate: int = 1) -> None:
    """SGD over the DistributedSampler's share; gradients of `accumulate` micro-batches are summed locally
    (model.no_sync()) and synchronised once, on the last micro-batch of each window."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    data = dataset()
    sampler = DistributedSampler(data, num_replicas=world_size, rank=rank, shuffle=True, seed=0)
    loader = DataLoader(data, batch_size=BATCH, sampler=sampler)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for index, (inputs, targets) in enumerate(loader):
            boundary = (index + 1) % accumulate == 0
            with contextlib.nullcontext() if boundary else model.no_sync():
                loss = torch.nn.functional.mse_loss(model(inputs), targets) / accumulate
                loss.backward()
            if boundary:
                optimizer.step()
                optimizer.zero_grad()


def train(rank: int, world_size: int, port: int, epochs: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    model = torch.nn.parallel.DistributedDataParallel(network())
    train_loop(model, rank, world_size, epochs)
    if rank == 0:
        torch.save(model.module.state_dict(), out)
    dist.destroy_process_group()


if __name__ == "__main__":
    out, epochs, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    mp.start_processes(train, args=(2, port, epochs, out), nprocs=2, start_method="fork")
