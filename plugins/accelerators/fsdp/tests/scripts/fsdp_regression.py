"""The DDP tests' regression, trained with strategy="fsdp"; writes full weights and a full checkpoint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import trellis
from trellis_fsdp.strategy import FSDPStrategy

sys.path.insert(0, str(Path(__file__).parents[3] / "ddp" / "tests" / "scripts"))
from ddp_regression import BATCH, Regression, dataset  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--accumulate", type=int, default=1)
    arguments = parser.parse_args()
    module = Regression()
    strategy = FSDPStrategy(shard_modules=[torch.nn.Linear], timeout=60)
    trainer = trellis.Trainer(accelerator="cpu", strategy=strategy, devices=2, max_epochs=2, logger=False,
                              accumulate_grad_batches=arguments.accumulate, enable_checkpointing=False,
                              enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, DataLoader(dataset(), batch_size=BATCH, shuffle=True))
    full = strategy.module_state_dict()
    trainer.save_checkpoint(arguments.out + ".ckpt")
    if trainer.is_global_zero:
        torch.save({key.removeprefix("net."): value for key, value in full.items()}, arguments.out)
