"""A training job for the preemption test; resumes with ckpt_path="last" after a preemption.

    python preemption_job.py ROOT
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import trellis
from support import TinyRegressor, regression_data


class Slow(TinyRegressor):
    def training_step(self, batch, batch_idx):
        print(f"step {self.global_step}", flush=True)
        time.sleep(0.02)  # room for the signal to arrive mid-step
        return super().training_step(batch, batch_idx)


def main(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    trellis.seed_everything(0)
    trainer = trellis.Trainer(max_epochs=3, default_root_dir=root, logger=False, enable_checkpointing=False,
                              enable_progress_bar=False, enable_model_summary=False)
    resume = "last" if (root / "preempted.ckpt").exists() else None
    trainer.fit(Slow(), DataLoader(regression_data(320), batch_size=16, shuffle=True), ckpt_path=resume)
    torch.save(trainer.module.state_dict(), root / "final.pt")
    print("finished", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
