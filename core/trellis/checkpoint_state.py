"""A run's checkpoint, in one place: what it holds, which file `ckpt_path` names, and restoring from it
(docs/checkpoint-format.md describes the dictionary)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from trellis.checkpointing import FORMAT_VERSION, check_version
from trellis.errors import ConfigurationError
from trellis.utils.rng import training_rng_state

if TYPE_CHECKING:
    from trellis.run import Run


def build_checkpoint(run: Run, weights_only: bool = False) -> dict[str, Any]:
    """Everything that makes the next step identical: weights, optimizers, loops, RNG, callbacks."""
    from trellis import __version__

    strategy, module, progress = run.strategy, run.module, run.fit_loop
    checkpoint: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "trellis_version": __version__,
        "epoch": progress.epoch,
        "global_step": progress.global_step,
        "state_dict": strategy.checkpoint_weights(weights_only),
        "hyper_parameters": dict(module.hparams_initial or module.hparams),
    }
    if weights_only:
        return checkpoint
    checkpoint.update(
        {
            "loops": progress.state_dict(),
            "optimizer_states": [strategy.optimizer_state_dict(optimizer) for optimizer in run.optimizers],
            "lr_schedulers": [config.scheduler.state_dict() for config in run.scheduler_configs],
            "precision": strategy.precision.state_dict(),
            "callbacks": {callback.state_key: callback.state_dict() for callback in run.callbacks},
            "loggers": {_logger_key(logger): logger.state_dict() for logger in run.loggers},
            "rng_states": training_rng_state(),
            "metrics": run.metrics.state_dict(),
        }
    )
    run.hooks.fire("on_save_checkpoint", checkpoint=checkpoint)
    return checkpoint


def restore(run: Run, ckpt_path: Any, training_state: bool) -> None:
    """Load the checkpoint `ckpt_path` names into a set-up run: the whole training state for fit, the
    weights alone for evaluation."""
    if ckpt_path is None:
        return
    checkpoint = run.strategy.load_checkpoint(resolve_path(run, ckpt_path))
    check_version(checkpoint)
    if not training_state:
        run.strategy.load_module_state_dict(checkpoint["state_dict"])
        return
    _restore_training_state(run, checkpoint)


def _restore_training_state(run: Run, checkpoint: dict[str, Any]) -> None:
    strategy = run.strategy
    run.hooks.fire("on_load_checkpoint", checkpoint=checkpoint)
    strategy.load_module_state_dict(checkpoint["state_dict"])
    for optimizer, state in zip(run.optimizers, checkpoint.get("optimizer_states", [])):
        strategy.load_optimizer_state_dict(optimizer, state)
    for config, state in zip(run.scheduler_configs, checkpoint.get("lr_schedulers", [])):
        config.scheduler.load_state_dict(state)
    strategy.precision.load_state_dict(checkpoint.get("precision", {}))
    callback_states = checkpoint.get("callbacks", {})
    for callback in run.callbacks:
        if callback.state_key in callback_states:
            callback.load_state_dict(callback_states[callback.state_key])
    logger_states = checkpoint.get("loggers", {})
    for logger in run.loggers:
        state = logger_states.get(_logger_key(logger))
        if state:
            logger.load_state_dict(state)
    if "metrics" in checkpoint:
        run.metrics.load_state_dict(checkpoint["metrics"])
    if "loops" in checkpoint:
        run.fit_loop.load_state_dict(checkpoint["loops"], checkpoint.get("rng_states"))


def resolve_path(run: Run, ckpt_path: Any) -> str:
    """The file `ckpt_path` names: a path, or "best"/"last" as the run's checkpoint callbacks know them."""
    if ckpt_path not in ("best", "last"):
        return os.fspath(ckpt_path)
    callback = next((callback for callback in run.callbacks if hasattr(callback, "best_model_path")), None)
    path = getattr(callback, f"{ckpt_path}_model_path", "") if callback is not None else ""
    if ckpt_path == "last":
        path = _newest_existing(run, [path, run.settings.preemption_checkpoint_path])
    if not path:
        raise ConfigurationError(
            f"ckpt_path={ckpt_path!r} but no {ckpt_path} checkpoint was saved by a ModelCheckpoint in this "
            "trainer: pass the checkpoint's path"
        )
    return path


def _newest_existing(run: Run, paths: list[str]) -> str:
    """The newest of the paths that exist (through the checkpoint IO, so remote URLs count)."""
    checkpoint_io = run.strategy.checkpoint_io
    existing = [path for path in paths if path and checkpoint_io.exists(path)]
    local = [path for path in existing if os.path.exists(path)]
    if len(local) == len(existing) > 1:
        return max(local, key=os.path.getmtime)
    return existing[0] if existing else ""


def _logger_key(logger: Any) -> str:
    return logger.name or type(logger).__name__
