"""A fresh Trainer for one tuning run, on the same hardware and numerics as the user's Trainer."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from trellis.errors import ConfigurationError

#: Trainer attributes a tuning run keeps (they change what one step computes).
_KEPT_SETTINGS = ("accumulate_grad_batches", "gradient_clip_val", "gradient_clip_algorithm", "inference_mode",
                  "detect_anomaly", "default_root_dir")


def trial_trainer(trainer: Any, callbacks: Sequence[Any], **flags: Any) -> Any:
    """A quiet Trainer (no logger, checkpoints, progress bar or summary, no validation) for a tuning run."""
    from trellis.trainer import Trainer

    strategy = trainer.strategy
    if len(strategy.devices) * strategy.num_nodes > 1:
        raise ConfigurationError(
            f"the tuner runs on one device, but this Trainer uses {len(strategy.devices)} device(s) on "
            f"{strategy.num_nodes} node(s): tune with Trainer(devices=1), then train with the values found"
        )
    kept = {name: getattr(trainer, name) for name in _KEPT_SETTINGS if hasattr(trainer, name)}
    settings = dict(
        accelerator=trainer.accelerator, devices=1 if list(strategy.devices) == [0] else list(strategy.devices),
        precision=copy.deepcopy(trainer.precision_plugin), logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
        callbacks=list(callbacks),
    )
    return Trainer(**{**kept, **settings, **flags})
