"""DDPStrategy's options passed to torch, each trained for real beside its hand-written reference (run by the tests).

`ddp_options.py OUT options`: two ranks (the script re-runs itself for rank 1) train, in order, with
accumulate_grad_batches=2 and the same by hand with model.no_sync(), then a model with an unused branch
under find_unused_parameters=True and under static_graph=True, and the plain hand-written loop. Both ranks
count their gradient all-reduces and save what they saw to OUT.rank<N>.pt.

`ddp_options.py OUT unused`: the model with the unused branch under plain DDP (fails in DDP's own check).
"""

# No `from __future__ import annotations`: DDP checks a comm hook's annotations as real types.
import sys
from typing import Any

import torch
import torch.distributed as dist
from ddp_regression import BATCH, FEATURES, Regression, dataset, network
from handwritten_ddp import train_loop
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.utils.data import DataLoader

import trellis
from trellis_ddp.strategy import DDPStrategy

EPOCHS = 2


def counting_allreduce(calls: list[int], bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP's own all-reduce of a gradient bucket, counted."""
    calls.append(bucket.index())
    return allreduce_hook(None, bucket)


class Probe(Regression):
    """The regression, counting its all-reduces and recording the DDP options it trained under."""

    def __init__(self) -> None:
        super().__init__()
        self.allreduces: list[int] = []
        self.ddp_options: dict[str, bool] = {}

    def on_train_start(self) -> None:
        wrapper = self.trainer.strategy.model
        wrapper.register_comm_hook(self.allreduces, counting_allreduce)
        self.ddp_options = {"find_unused_parameters": wrapper.find_unused_parameters,
                            "static_graph": wrapper.static_graph}


class UnusedBranch(Probe):
    """A second head that no step uses: its parameters never get a gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Linear(FEATURES, 1)


def fit(module: Probe, accumulate: int = 1, **ddp_options: Any) -> dict[str, Any]:
    untouched = {name: tensor.clone() for name, tensor in module.state_dict().items() if name.startswith("unused.")}
    trainer = trellis.Trainer(
        accelerator="cpu", strategy=DDPStrategy(timeout=60, **ddp_options), devices=2, max_epochs=EPOCHS,
        accumulate_grad_batches=accumulate, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(dataset(), batch_size=BATCH, shuffle=True))
    return {
        "weights": {name: tensor.detach().clone() for name, tensor in module.net.state_dict().items()},
        "allreduces": len(module.allreduces),
        "global_step": trainer.global_step,
        "options": module.ddp_options,
        "unused_changed": any(not torch.equal(module.state_dict()[name], value) for name, value in untouched.items()),
    }


def by_hand(accumulate: int = 1) -> dict[str, Any]:
    model = torch.nn.parallel.DistributedDataParallel(network())
    calls: list[int] = []
    model.register_comm_hook(calls, counting_allreduce)
    train_loop(model, dist.get_rank(), dist.get_world_size(), EPOCHS, accumulate)
    return {"weights": {name: tensor.detach().clone() for name, tensor in model.module.state_dict().items()},
            "allreduces": len(calls)}


def main(out: str, case: str) -> None:
    if case == "unused":
        fit(UnusedBranch())
        return
    report = {
        "accumulated": fit(Probe(), accumulate=2),
        "accumulated_by_hand": by_hand(accumulate=2),
        "find_unused_parameters": fit(UnusedBranch(), find_unused_parameters=True),
        "static_graph": fit(UnusedBranch(), static_graph=True),
        "by_hand": by_hand(),
    }
    torch.save(report, f"{out}.rank{dist.get_rank()}.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
