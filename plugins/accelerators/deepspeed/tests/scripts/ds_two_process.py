"""Run under `torchrun --nproc_per_node=2`: DeepSpeed stages 1-3 (loss, resume) and stage 2 against a DDP loop.

Rank zero writes what it measured to the JSON file named by the first argument.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ds_testkit as kit  # noqa: E402

from trellis_deepspeed import DeepSpeedStrategy  # noqa: E402


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


def main(output: str) -> None:
    root = os.environ.get("DS_TEST_ROOT") or tempfile.mkdtemp()
    report: dict[str, object] = {}
    for stage in (1, 2, 3):
        run = kit.straight_and_resumed(lambda: DeepSpeedStrategy(stage=stage), f"{root}/stage{stage}")
        report[f"stage{stage}"] = {
            "first_losses": run["losses"][:4],
            "last_losses": run["losses"][-4:],
            "straight_step": run["straight_step"],
            "resumed_step": run["resumed_step"],
            "resume_difference": max_difference(run["straight_weights"], run["resumed_weights"]),
            "world_size": torch.distributed.get_world_size(),
        }
        if stage == 2:
            ddp = handwritten_ddp(epochs=2, lr=0.05)
            report["stage2"]["ddp_difference"] = max_difference(run["straight_weights"], ddp)
    if torch.distributed.get_rank() == 0:
        with open(output, "w", encoding="utf-8") as handle:
            json.dump(report, handle)


if __name__ == "__main__":
    main(sys.argv[1])
