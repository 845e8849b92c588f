"""Trains a small regression with DCP checkpoints under ddp or fsdp, then reports the full training state.

    python dcp_job.py --strategy fsdp --devices 2 --checkpoint DIR/model.ckpt --report DIR/report.pt [--resume]

Without --resume: one epoch, then `trainer.save_checkpoint(checkpoint)` (asynchronous with --asynchronous).
With --resume: fit resumes from the checkpoint (the epoch is already done, so nothing trains). Either way
rank 0 writes the full (gathered) weights and optimizer state to --report for the test to compare.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.data import DataLoader, TensorDataset

import trellis
from trellis_dcp import DCPCheckpointIO


class Regression(trellis.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))

    def training_step(self, batch, batch_idx):
        inputs, targets = batch
        return torch.nn.functional.mse_loss(self.net(inputs), targets)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)


def dataset() -> TensorDataset:
    generator = torch.Generator().manual_seed(1234)
    inputs = torch.randn(64, 8, generator=generator)
    return TensorDataset(inputs, inputs @ torch.randn(8, 1, generator=generator))


def strategy(name: str):
    if name == "fsdp":
        from trellis_fsdp.strategy import FSDPStrategy

        return FSDPStrategy(shard_modules=[torch.nn.Linear], timeout=60)
    from trellis_ddp.strategy import DDPStrategy

    return DDPStrategy(timeout=60)


def full_state(trainer: trellis.Trainer) -> dict:
    """Weights and optimizer state gathered whole, as one process would hold them."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model, optimizer = get_state_dict(trainer.strategy.module, trainer.optimizers, options=options)
    return {"model": model, "optimizer": optimizer, "global_step": trainer.global_step}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--strategy", choices=["ddp", "fsdp"], required=True)
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--report", required=True)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--asynchronous", action="store_true")
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    io = DCPCheckpointIO(asynchronous=arguments.asynchronous)
    trainer = trellis.Trainer(accelerator="cpu", strategy=strategy(arguments.strategy), devices=arguments.devices,
                              plugins=[io], max_epochs=1, logger=False, enable_checkpointing=False,
                              enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Regression(), DataLoader(dataset(), batch_size=4, shuffle=True),
                ckpt_path=arguments.checkpoint if arguments.resume else None)
    if not arguments.resume:
        trainer.save_checkpoint(arguments.checkpoint)
    report = full_state(trainer)
    io.teardown()
    if trainer.is_global_zero:
        torch.save(report, arguments.report)


if __name__ == "__main__":
    main()
