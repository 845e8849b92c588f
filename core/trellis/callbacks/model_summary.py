"""A table of the module's layers and parameter counts, printed when fit starts."""

from __future__ import annotations

from typing import Any

import torch

from trellis.callbacks.base import Callback
from trellis.utils.rank_zero import rank_zero_info


class ModelSummary(Callback):
    """Layers down to `max_depth` (-1: all), their types and parameter counts, totals and size in MB."""

    def __init__(self, max_depth: int = 1) -> None:
        self.max_depth = max_depth

    def on_fit_start(self, trainer: Any, pl_module: torch.nn.Module) -> None:
        if trainer.is_global_zero:
            rank_zero_info(summarize(pl_module, self.max_depth))


def summarize(module: torch.nn.Module, max_depth: int = 1) -> str:
    rows = [("", "Name", "Type", "Params")]
    for index, (name, child) in enumerate(
        (name, child) for name, child in module.named_modules()
        if name and (max_depth < 0 or name.count(".") < max_depth)
    ):
        rows.append((str(index), name, type(child).__name__, _human(sum(p.numel() for p in child.parameters()))))
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    total = sum(p.numel() for p in module.parameters())
    size_mb = sum(p.numel() * p.element_size() for p in module.parameters()) / 1e6
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows]
    separator = "-" * len(lines[0])
    lines.insert(1, separator)
    lines += [separator, f"{_human(trainable)} Trainable params", f"{_human(total - trainable)} Non-trainable params",
              f"{_human(total)} Total params", f"{size_mb:.3f} Total estimated model params size (MB)"]
    return "\n".join(lines)


def _human(count: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return str(count)
