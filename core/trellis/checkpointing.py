"""The checkpoint dictionary: what it holds, building it, restoring from it (docs/checkpoint-format.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trellis.errors import CheckpointError
from trellis.roles.checkpoint_io import PathLike
from trellis.selection import default_checkpoint_io
from trellis.utils.rng import training_rng_state

if TYPE_CHECKING:
    from trellis.trainer import Trainer

FORMAT_VERSION = 1


def build_checkpoint(trainer: Trainer, weights_only: bool = False) -> dict[str, Any]:
    """Everything that makes the next step identical: weights, optimizers, loops, RNG, callbacks."""
    from trellis import __version__

    strategy = trainer.strategy
    module = trainer.module
    checkpoint: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "trellis_version": __version__,
        "epoch": trainer.current_epoch,
        "global_step": trainer.global_step,
        "state_dict": strategy.checkpoint_weights(weights_only),
        "hyper_parameters": dict(module.hparams_initial or module.hparams),
    }
    if weights_only:
        return checkpoint
    checkpoint.update(
        {
            "loops": trainer.fit_loop.state_dict(),
            "optimizer_states": [strategy.optimizer_state_dict(optimizer) for optimizer in trainer.optimizers],
            "lr_schedulers": [config.scheduler.state_dict() for config in trainer.lr_scheduler_configs],
            "precision": strategy.precision.state_dict(),
            "callbacks": {callback.state_key: callback.state_dict() for callback in trainer.callbacks},
            "loggers": {logger.name or type(logger).__name__: logger.state_dict() for logger in trainer.loggers},
            "rng_states": training_rng_state(),
            "metrics": trainer.metrics.state_dict(),
        }
    )
    trainer.hooks.call("on_save_checkpoint", trainer=trainer, pl_module=module, checkpoint=checkpoint)
    return checkpoint


def restore_training_state(trainer: Trainer, checkpoint: dict[str, Any]) -> None:
    """Load what build_checkpoint stored back into a set-up trainer."""
    check_version(checkpoint)
    strategy = trainer.strategy
    trainer.hooks.call("on_load_checkpoint", trainer=trainer, pl_module=trainer.module, checkpoint=checkpoint)
    strategy.load_module_state_dict(checkpoint["state_dict"])
    for optimizer, state in zip(trainer.optimizers, checkpoint.get("optimizer_states", [])):
        strategy.load_optimizer_state_dict(optimizer, state)
    for config, state in zip(trainer.lr_scheduler_configs, checkpoint.get("lr_schedulers", [])):
        config.scheduler.load_state_dict(state)
    strategy.precision.load_state_dict(checkpoint.get("precision", {}))
    callback_states = checkpoint.get("callbacks", {})
    for callback in trainer.callbacks:
        if callback.state_key in callback_states:
            callback.load_state_dict(callback_states[callback.state_key])
    logger_states = checkpoint.get("loggers", {})
    for logger in trainer.loggers:
        state = logger_states.get(logger.name or type(logger).__name__)
        if state:
            logger.load_state_dict(state)
    if "metrics" in checkpoint:
        trainer.metrics.load_state_dict(checkpoint["metrics"])
    if "loops" in checkpoint:
        trainer.fit_loop.load_state_dict(checkpoint["loops"], checkpoint.get("rng_states"))


def load_checkpoint_file(path: PathLike, map_location: Any = "cpu", weights_only: bool = True) -> dict[str, Any]:
    """Load a checkpoint without a Trainer, through the default checkpoint IO plugin."""
    checkpoint_io = default_checkpoint_io()
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
