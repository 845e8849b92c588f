"""The checkpoint format: its version, loading a file without a Trainer, migrating older formats
(docs/checkpoint-format.md). What a run puts in a checkpoint and restores from it: checkpoint_state.py."""

from __future__ import annotations

from typing import Any

from trellis import discovery
from trellis.errors import CheckpointError
from trellis.roles.checkpoint_io import PathLike

FORMAT_VERSION = 1


def load_checkpoint_file(path: PathLike, map_location: Any = "cpu", weights_only: bool = True) -> dict[str, Any]:
    """Load a checkpoint without a Trainer, through the default checkpoint IO plugin."""
    checkpoint_io = discovery.load("checkpoint_io", "torch")()
    checkpoint = checkpoint_io.load_checkpoint(path, map_location=map_location, weights_only=weights_only)
    check_version(checkpoint)
    return checkpoint


def check_version(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """Refuse what is not a checkpoint or is too new; migrate older formats forward (in place)."""
    if "state_dict" not in checkpoint:
        raise CheckpointError(
            f"this file is not a training checkpoint (its keys are {sorted(checkpoint)[:8]}, without 'state_dict'): "
            "load plain weights with module.load_state_dict(torch.load(path)) instead"
        )
    version = checkpoint.get("format_version", 0)
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"the checkpoint has format version {version}, newer than this Trellis reads ({FORMAT_VERSION}): "
            "upgrade trellis"
        )
    while version < FORMAT_VERSION:
        MIGRATIONS[version](checkpoint)
        version = checkpoint["format_version"] = version + 1
    return checkpoint


def _from_unversioned(checkpoint: dict[str, Any]) -> None:
    """Format 0 (a Lightning checkpoint): weights, hyperparameters, optimizers, schedulers and progress carry
    over; Lightning's own loop, callback and RNG layouts do not, so training resumes at the next epoch."""
    for key in ("loops", "callbacks", "rng_states", "metrics"):
        checkpoint.pop(key, None)
    checkpoint.setdefault("hyper_parameters", {})
    checkpoint["loops"] = {"epoch": checkpoint.get("epoch", 0), "batches_done": 0, "phase": "logged",
                           "global_step": checkpoint.get("global_step", 0), "validation_pending": False,
                           "epoch_start_rng": None}


#: format N -> the function that turns it into format N + 1.
MIGRATIONS = {0: _from_unversioned}
