"""One DDP run for the kit: python -m trellis.testing.ddp_worker ACCELERATOR OUT_DIR.

Every rank writes OUT_DIR/rank<global_rank>.json with its world size and final weights.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import trellis
from trellis.testing import workload


class ReportWeights(trellis.Callback):
    """Writes what this rank ended with; runs in every rank's process, whoever launched it."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        weights = {key: value.detach().cpu().flatten().tolist() for key, value in pl_module.state_dict().items()}
        report = {"global_rank": trainer.global_rank, "world_size": trainer.world_size, "weights": weights}
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


def main(accelerator: str, out_dir: str) -> None:
    out = Path(out_dir)
    flags = workload.trainer_flags(
        out, accelerator=accelerator, strategy="ddp", devices=2, callbacks=[ReportWeights(out)]
    )
    workload.fit(flags, workload.TOTAL_STEPS)


if __name__ == "__main__":
    main(*sys.argv[1:3])
