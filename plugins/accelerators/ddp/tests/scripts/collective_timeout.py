"""Rank 0 waits at a barrier that rank 1 never reaches: the strategy's timeout must end the wait."""

from __future__ import annotations

import sys
import time

import trellis
from trellis_ddp.strategy import DDPStrategy

if __name__ == "__main__":
    strategy = DDPStrategy(timeout=float(sys.argv[1]))
    trainer = trellis.Trainer(accelerator="cpu", strategy=strategy, devices=2, logger=False)
    strategy.launcher.launch(strategy.setup_environment)
    if trainer.global_rank == 0:
        strategy.barrier()
    else:
        time.sleep(120)
