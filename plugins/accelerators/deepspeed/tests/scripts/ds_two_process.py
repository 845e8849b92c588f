"""Started with plain `python ds_two_process.py REPORT ROOT`: the strategy launches the second process itself.

Trains DeepSpeed stages 1-3 over 2 processes (straight, and stopped after one epoch then resumed), and stage 2
against a hand-written DDP loop on the same data; rank zero writes what it measured to the REPORT JSON file.
"""

from __future__ import annotations

import json
import os
import sys

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ds_testkit as kit

from trellis_deepspeed import DeepSpeedStrategy

PROCESSES = 2


def handwritten_ddp(epochs: int, lr: float) -> dict[str, torch.Tensor]:
    """The plain loop: DDP over gloo, each rank its DistributedSampler share of the same unshuffled data."""
    net = DistributedDataParallel(kit.build_net())
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    sampler = DistributedSampler(kit.dataset(), shuffle=False)
    data = DataLoader(kit.dataset(), batch_size=8, sampler=sampler)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for inputs, targets in data:
            loss = torch.nn.functional.mse_loss(net(inputs), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return {f"net.{name}": tensor.detach().clone() for name, tensor in net.module.state_dict().items()}


def max_difference(left: dict[str, torch.Tensor], right: dict[str, torch.Tensor]) -> float:
    assert left.keys() == right.keys(), (sorted(left), sorted(right))
    return max(float((left[name] - right[name]).abs().max()) for name in left)


def measure(stage: int, root: str) -> dict[str, object]:
    run = kit.straight_and_resumed(lambda: DeepSpeedStrategy(stage=stage), f"{root}/stage{stage}", devices=PROCESSES)
    return {
        "losses": run["losses"],
        "resumed_losses": run["resumed_losses"],
        "straight_step": run["straight_step"],
        "resumed_step": run["resumed_step"],
        "resume_difference": max_difference(run["straight_weights"], run["resumed_weights"]),
        "weights": run["straight_weights"],
        "world_size": torch.distributed.get_world_size(),
    }


def main(report_path: str, root: str) -> None:
    report = {f"stage{stage}": measure(stage, root) for stage in (1, 2, 3)}
    ddp = handwritten_ddp(epochs=2, lr=0.05)
    report["stage2"]["ddp_difference"] = max_difference(report["stage2"]["weights"], ddp)
    pids: list[int | None] = [None] * PROCESSES
    torch.distributed.all_gather_object(pids, os.getpid())
    for run in report.values():
        del run["weights"]
    report["pids"] = pids
    if torch.distributed.get_rank() == 0:
        with open(report_path, "w", encoding="utf-8") as handle:
            json.dump(report, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
