"""Small models and datasets for bug reports, tests and examples (what `lightning.pytorch.demos` offers).

    from trellis.demos import BoringModel, BoringDataModule, RandomDataset
"""

from __future__ import annotations

from trellis.demos.boring_classes import (
    BoringDataModule,
    BoringModel,
    DemoModel,
    ManualOptimBoringModel,
    RandomDataset,
    RandomDictDataset,
    RandomIterableDataset,
    RandomIterableDatasetWithLen,
)
from trellis.demos.transformer import LightningTransformer, Transformer, TransformerModule, WikiText2

__all__ = [
    "BoringDataModule",
    "BoringModel",
    "DemoModel",
    "LightningTransformer",
    "ManualOptimBoringModel",
    "RandomDataset",
    "RandomDictDataset",
    "RandomIterableDataset",
    "RandomIterableDatasetWithLen",
    "Transformer",
    "TransformerModule",
    "WikiText2",
]
