"""A run's checkpoint, in one place: what it holds, which file `ckpt_path` names, and restoring from it
(docs/checkpoint-format.md describes the dictionary)."""

from __future__ import annotations

import glob
import os
from typing import TYPE_CHECKING, Any

import torch

from trellis.checkpointing import FORMAT_VERSION, check_version
from trellis.errors import CheckpointMismatchError, ConfigurationError
from trellis.utils.hparams import checkpoint_entries
from trellis.utils.rank_zero import rank_zero_warn
from trellis.utils.rng import training_rng_state

if TYPE_CHECKING:
    from trellis.roles import Logger
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
        **checkpoint_entries(module),
        **checkpoint_entries(run.datamodule),
    }
    datamodule_state = getattr(run.datamodule, "state_dict", lambda: None)()
    if datamodule_state:  # under the DataModule's class name, as Lightning stores it
        checkpoint[type(run.datamodule).__qualname__] = datamodule_state
    if weights_only:
        return checkpoint
    checkpoint.update(
        {
            "loops": progress.state_dict(),
            "optimizer_states": [strategy.optimizer_state_dict(optimizer) for optimizer in run.optimizers],
            "lr_schedulers": [config.scheduler.state_dict() for config in run.scheduler_configs],
            "precision": strategy.precision.state_dict(),
            "callbacks": _callback_states(run.callbacks),
            "loggers": {_logger_key(logger): logger.state_dict() for logger in run.loggers},
            "rng_states": training_rng_state(strategy.accelerator),
            "metrics": run.metrics.state_dict(),
        }
    )
    run.hooks.fire("on_save_checkpoint", checkpoint=checkpoint)
    return checkpoint


def load(run: Run, path: str, weights_only: bool = True) -> dict[str, Any]:
    """The checkpoint at `path` (see resolve_path), checked and migrated to the current format."""
    return check_version(run.strategy.load_checkpoint(path, weights_only=weights_only), path)


def restore_module(run: Run, checkpoint: dict[str, Any], with_state: bool) -> None:
    """The module's weights (after its on_load_checkpoint, with its strict_loading) and the DataModule's state;
    for fit also the callbacks' and loggers' state (before on_fit_start, as Lightning restores them, so loggers
    continue their run before anything is logged)."""
    module, datamodule = run.module, run.datamodule
    if with_state:
        run.hooks.fire("on_load_checkpoint", checkpoint=checkpoint)
    else:
        module.on_load_checkpoint(checkpoint)
    try:
        run.strategy.load_module_state_dict(checkpoint["state_dict"], strict=module.strict_loading)
    except RuntimeError as error:
        if "loading state_dict" not in str(error):  # not torch's report of missing, unexpected or reshaped weights
            raise
        path, name = str(run.trainer.ckpt_path), type(module).__name__
        raise CheckpointMismatchError.from_load_error(path, name, error) from error
    if datamodule is not None and type(datamodule).__qualname__ in checkpoint:
        datamodule.load_state_dict(checkpoint[type(datamodule).__qualname__])
    if not with_state:
        return
    callback_states = checkpoint.get("callbacks", {})
    for callback in run.callbacks:
        if callback.state_key in callback_states:
            callback.load_state_dict(callback_states[callback.state_key])
    logger_states = checkpoint.get("loggers", {})
    for logger in run.loggers:
        state = logger_states.get(_logger_key(logger))
        if state:
            logger.load_state_dict(state)


def restore_training_state(run: Run, checkpoint: dict[str, Any]) -> None:
    """Optimizers, schedulers, loss scaling, metrics and loop progress (with the RNG to resume with)."""
    strategy = run.strategy
    for optimizer, state in zip(run.optimizers, checkpoint.get("optimizer_states", [])):
        strategy.load_optimizer_state_dict(optimizer, state)
    for config, state in zip(run.scheduler_configs, checkpoint.get("lr_schedulers", [])):
        config.scheduler.load_state_dict(state)
    strategy.precision.load_state_dict(checkpoint.get("precision", {}))
    if "metrics" in checkpoint:
        run.metrics.load_state_dict(checkpoint["metrics"])
    if "loops" in checkpoint:
        run.fit_loop.load_state_dict(checkpoint["loops"], checkpoint.get("rng_states"))


def resolve_path(run: Run, ckpt_path: Any) -> str | None:
    """The file `ckpt_path` names: a path; "best" as the first ModelCheckpoint knows it; "last": the checkpoint
    on disk that holds the most training (None, with a warning, when there is none yet)."""
    if ckpt_path == "best":
        callback = next((callback for callback in run.callbacks if hasattr(callback, "best_model_path")), None)
        path = getattr(callback, "best_model_path", "") if callback is not None else ""
        if not path:
            raise ConfigurationError(
                "ckpt_path='best' but no ModelCheckpoint of this trainer saved a best checkpoint: pass the "
                "checkpoint's path, or fit with a ModelCheckpoint first"
            )
        return str(path)
    if ckpt_path == "last":
        path = _latest_on_disk(run)
        if path is None:
            rank_zero_warn(
                "ckpt_path='last' found no checkpoint to resume from (looked in the checkpoint directories and for "
                f"{run.settings.preemption_checkpoint_path}): training starts from the beginning."
            )
        return path
    given: str = os.fspath(ckpt_path)
    return given


def _latest_on_disk(run: Run) -> str | None:
    """Of the checkpoints this trainer's ModelCheckpoints and preemption write, the one with the most
    optimizer steps (file times can lie: a copied or older preemption file must never win)."""
    checkpoint_io = run.strategy.checkpoint_io
    assert checkpoint_io is not None
    candidates: list[str] = [run.settings.preemption_checkpoint_path]
    for callback in run.callbacks:
        candidates += [getattr(callback, name, "") or "" for name in ("last_model_path", "best_model_path")]
        directory = getattr(callback, "dirpath", None)
        if directory and os.path.isdir(directory):
            candidates += glob.glob(os.path.join(glob.escape(directory), "*.ckpt"))
    root = glob.escape(run.settings.default_root_dir)
    for pattern in ("checkpoints/*.ckpt", "*/version_*/checkpoints/*.ckpt", "*/*/checkpoints/*.ckpt"):
        candidates += glob.glob(os.path.join(root, pattern))
    progress: dict[str, tuple[int, int]] = {}
    for path in dict.fromkeys(path for path in candidates if path):
        if path in progress or not checkpoint_io.exists(path):
            continue
        held = _steps_held(run, path)
        if held is not None:
            progress[path] = held
    return max(progress, key=progress.__getitem__) if progress else None


def _steps_held(run: Run, path: str) -> tuple[int, int] | None:
    """(global step, batches into the run) a checkpoint holds; None for one that cannot be read."""
    try:
        if os.path.isfile(path):  # a single file: mapped, not read, to see its progress
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        else:
            checkpoint = run.strategy.load_checkpoint(path)
    except Exception as error:  # a damaged file among the candidates must not stop a resume from a good one
        rank_zero_warn(f"ckpt_path='last' skips {path}: {error}")
        return None
    loops = checkpoint.get("loops") or {}
    return int(checkpoint.get("global_step", 0)), int(loops.get("total_batches_done", 0))


def _callback_states(callbacks: list[Any]) -> dict[str, Any]:
    """Each callback's state under its state_key; callbacks without state are left out, as in Lightning."""
    states = {}
    for callback in callbacks:
        state = callback.state_dict()
        if state:
            states[callback.state_key] = state
    return states


def _logger_key(logger: Logger) -> str:
    return logger.name or type(logger).__name__
