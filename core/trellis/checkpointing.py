"""The checkpoint format: its version, loading a file without a Trainer, migrating older formats
(docs/checkpoint-format.md). What a run puts in a checkpoint and restores from it: checkpoint_state.py."""

from __future__ import annotations

import argparse
import os
from typing import IO, Any

import torch

from trellis.errors import CheckpointError
from trellis.roles.checkpoint_io import PathLike
from trellis.selection import default_checkpoint_io

FORMAT_VERSION = 2


def load_checkpoint_file(path: PathLike | IO[bytes], map_location: Any = "cpu",
                         weights_only: bool | None = True) -> dict[str, Any]:
    """Load a checkpoint without a Trainer, through the default checkpoint IO plugin (a file object: torch.load).

    weights_only=None is torch's and Lightning's default: True, except for http(s) URLs.
    """
    if weights_only is None:
        weights_only = not (isinstance(path, (str, os.PathLike)) and os.fspath(path).startswith(("http://", "https://")))
    if isinstance(path, (str, os.PathLike)):
        checkpoint = default_checkpoint_io().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        check_version(checkpoint, path)
    else:
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location=map_location, weights_only=weights_only)
        check_version(checkpoint)
    return checkpoint


def check_version(checkpoint: Any, path: PathLike | None = None) -> dict[str, Any]:
    """Refuse what is not a checkpoint or is too new; migrate older formats forward (in place).

    path: the file it was loaded from, named in the errors.
    """
    source = f"the checkpoint {os.fspath(path)!r}" if path is not None else "the checkpoint"
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"{source} holds a {type(checkpoint).__name__}, not a checkpoint (the dictionary trainer.save_checkpoint "
            "and ModelCheckpoint write): load it with torch.load(path) and use the value directly"
        )
    if "state_dict" not in checkpoint:
        raise CheckpointError(
            f"{source} is not a training checkpoint: its keys are {sorted(map(str, checkpoint))[:8]}, without "
            "'state_dict'. If it holds a module's weights, load them with module.load_state_dict(torch.load(path))"
        )
    version = checkpoint.get("format_version", 0)
    if type(version) is not int or version < 0:
        raise CheckpointError(
            f"{source} has format_version {version!r}, which is no format version: Trellis writes an int from 1 to "
            f"{FORMAT_VERSION}, and a file without the key is read as format 0 (a PyTorch Lightning checkpoint). The "
            "file was altered or written by another tool: save it again with the code that made it, or set "
            "checkpoint['format_version'] to the format its layout follows (docs/checkpoint-format.md)"
        )
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{source} has format version {version}, newer than this Trellis reads ({FORMAT_VERSION}): "
            "upgrade trellis (pip install -U trellis)"
        )
    while version < FORMAT_VERSION:
        MIGRATIONS[version](checkpoint)
        version = checkpoint["format_version"] = version + 1
    return checkpoint


def _from_unversioned(checkpoint: dict[str, Any]) -> None:
    """Format 0 (a PyTorch Lightning checkpoint): weights, hyperparameters, optimizers, schedulers and the
    GradScaler carry over, and Lightning's loop progress becomes ours, so training
    resumes where Lightning would. Callback and logger states do not carry over; Lightning stores no RNG."""
    lightning_loops = checkpoint.pop("loops", None)
    for key in ("callbacks", "rng_states", "metrics"):
        checkpoint.pop(key, None)
    checkpoint.setdefault("hyper_parameters", {})
    for key in _LIGHTNING_SCALER_KEYS:
        if key in checkpoint:
            checkpoint["precision"] = checkpoint.pop(key)
    fit_loop = lightning_loops.get("fit_loop") if isinstance(lightning_loops, dict) else None
    checkpoint["loops"] = _lightning_progress(fit_loop, checkpoint)


#: where Lightning keeps the GradScaler state: its precision plugin's class name (16-mixed, FSDP), or the 1.x key.
_LIGHTNING_SCALER_KEYS = ("MixedPrecision", "FSDPPrecision", "native_amp_scaling_state")


def _lightning_progress(fit_loop: dict[str, Any] | None, checkpoint: dict[str, Any]) -> dict[str, Any]:
    """Our `loops` entry for the point where Lightning 2.x resumes from `fit_loop` (its "loops"/"fit_loop" state).

    Lightning counts each epoch and batch as ready/started/processed/completed; which counters have moved
    says in which hook the checkpoint was written. Lightning steps its epoch-interval schedulers right after
    the epoch's last batch, before validation and on_train_epoch_end, so every checkpoint written after that
    batch already holds the stepped schedulers: such checkpoints resume at the next epoch, as Lightning
    does, and never step the schedulers again. docs/checkpoint-format.md has the full mapping.
    """
    global_step = int(checkpoint.get("global_step", 0))

    def resume_at(epoch: int, batches_done: int = 0, validation_pending: bool = False) -> dict[str, Any]:
        return {"epoch": epoch, "batches_done": batches_done, "phase": "running", "global_step": global_step,
                "validation_pending": validation_pending, "epoch_start_rng": None}

    if not fit_loop or "epoch_progress" not in fit_loop:  # Lightning before 1.5, or another tool
        return resume_at(checkpoint["epoch"] + 1 if isinstance(checkpoint.get("epoch"), int) else 0)
    epochs = fit_loop["epoch_progress"]["current"]
    if epochs["processed"] > epochs["completed"]:  # written in on_train_epoch_end
        return resume_at(epochs["processed"])
    if epochs["started"] == epochs["processed"]:  # between epochs: after fit, or in on_train_epoch_start
        return resume_at(epochs["completed"])
    epoch = epochs["completed"]
    progress = fit_loop.get("epoch_loop.batch_progress", {})
    batches = progress.get("current", {"ready": 0, "started": 0, "processed": 0, "completed": 0})
    # written in on_train_batch_end: that batch's step is done, its completion not yet counted
    batch_ending = batches["ready"] == batches["started"] == batches["processed"] == batches["completed"] + 1
    settled = batches["ready"] == batches["completed"]  # between batches (on_validation_end, say)
    if progress.get("is_last_batch") and (batch_ending or settled):
        return resume_at(epoch + 1)
    evaluation = fit_loop.get("epoch_loop.val_loop.batch_progress", {}).get("total", {})
    mid_evaluation = (  # written inside a validation batch: Lightning runs that validation again
        settled and evaluation.get("ready", 0) == evaluation.get("started", 0)
        and evaluation.get("processed", 0) == evaluation.get("started", 0) - 1
        and evaluation.get("completed", 0) == evaluation.get("processed", 0)
    )
    return resume_at(epoch, batches["processed"] if batch_ending else batches["completed"], mid_evaluation)


def _from_format_1(checkpoint: dict[str, Any]) -> None:
    """Format 1 -> 2: the loop's progress gained the batches that stepped, the batches of all epochs, and the
    work left at a batch boundary; format 1's epoch-end validation phases map onto the last batch's boundary."""
    loops = checkpoint.get("loops")
    if not loops:
        return
    phase, pending = loops.pop("phase"), loops.pop("validation_pending")
    step = loops["global_step"]
    loops.update(batches_that_stepped=step, total_batches_done=step, stepped=True, epoch_complete=phase != "running",
                 boundary="after_batch" if pending and phase == "running" else "",
                 phase={"validating": "running", "validated": "epoch_end"}.get(phase, phase))
    if phase == "validating":
        loops["boundary"] = "after_batch"


#: format N -> the function that turns it into format N + 1.
MIGRATIONS = {0: _from_unversioned, 1: _from_format_1}
