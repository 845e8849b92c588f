"""A module whose large layer is created in configure_model, trained with strategy="fsdp" on two processes.

Writes, from each rank, what the layer looked like when created and after sharding, and the losses.
"""

from __future__ import annotations

import json
import sys

import torch
from torch.utils.data import DataLoader, TensorDataset

import trellis


class WideHead(trellis.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Linear(8, 64)
        self.head: torch.nn.Linear | None = None
        self.created_on_meta = False
        self.losses: list[float] = []
        self.stem_at_start: torch.Tensor | None = None

    def configure_model(self) -> None:
        if self.head is None:
            self.head = torch.nn.Linear(64, 64)
            self.created_on_meta = self.head.weight.is_meta

    def on_train_start(self) -> None:
        self.stem_at_start = self.stem.weight.full_tensor().detach().clone()  # after sharding, before training

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.head(torch.tanh(self.stem(x)))[:, :1], y)
        self.losses.append(float(loss.detach()))
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)


if __name__ == "__main__":
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    data = TensorDataset(x, x[:, :1] - x[:, 1:2])
    module = WideHead()
    stem_before = module.stem.weight.detach().clone()
    trainer = trellis.Trainer(accelerator="cpu", strategy="fsdp", devices=2, max_epochs=3, logger=False,
                              enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, DataLoader(data, batch_size=32))
    local_head = module.head.weight.to_local()
    full = trainer.strategy.module_state_dict()
    report = {
        "rank": trainer.global_rank, "created_on_meta": module.created_on_meta,
        "local_head_elements": local_head.numel(), "head_elements": 64 * 64,
        "first_loss": module.losses[0], "last_loss": module.losses[-1],
        "head_finite": bool(torch.isfinite(full["head.weight"]).all()) if trainer.is_global_zero else True,
        "stem_kept_through_materialisation": bool(torch.equal(stem_before, module.stem_at_start)),
    }
    with open(f"{sys.argv[1]}.rank{trainer.global_rank}.json", "w") as file:
        json.dump(report, file)
