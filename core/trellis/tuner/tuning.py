"""trellis.tuner.Tuner: the learning-rate finder and the batch-size finder for a Trainer's settings."""

from __future__ import annotations

import copy
from typing import Any

from trellis.errors import ConfigurationError, TrainingError
from trellis.tuner import batch_size_scaling as scaling
from trellis.tuner.lr_finder import LearningRateSweep, LRFinderResult, check_range
from trellis.tuner.trial_trainer import trial_trainer
from trellis.utils.rank_zero import rank_zero_info

_LR_ATTRIBUTES = ("lr", "learning_rate")


class Tuner:
    """Runs short real fits on fresh Trainers built from `trainer`'s hardware and numerics.

    The model's weights are restored after each search, so tuning leaves only the value it found.
    """

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer

    def lr_find(
        self,
        model: Any,
        train_dataloaders: Any = None,
        datamodule: Any = None,
        min_lr: float = 1e-8,
        max_lr: float = 1.0,
        num_training: int = 100,
        mode: str = "exponential",
        early_stop_threshold: float | None = 4.0,
        update_attr: bool = True,
        attr_name: str = "",
    ) -> LRFinderResult:
        """Train `num_training` steps with the rate rising from min_lr to max_lr; stop early when the
        smoothed loss exceeds early_stop_threshold times its best. With update_attr, the suggested rate is
        written to model.lr / model.learning_rate (or the hparams entry, or `attr_name`)."""
        check_range(min_lr, max_lr, num_training, mode)
        result = LRFinderResult(min_lr, max_lr, num_training, mode)
        with _restored(model):
            trainer = trial_trainer(self.trainer, [LearningRateSweep(result, early_stop_threshold)])
            try:
                trainer.fit(model, train_dataloaders=train_dataloaders, datamodule=datamodule)
            except TrainingError:
                if not result.results["lr"]:
                    raise  # the very first step was not finite: nothing to learn from the curve
        suggestion = result.suggestion() if update_attr else None
        if suggestion is not None:
            names = _rate_holders(model, attr_name)
            for holder, name in names:
                _assign(holder, name, suggestion)
            rank_zero_info(f"learning-rate finder: suggested lr {suggestion:.3g}"
                           + (f", set as {', '.join(name for _, name in names)}" if names else ""))
        return result

    def scale_batch_size(
        self,
        model: Any,
        datamodule: Any = None,
        mode: str = "power",
        steps_per_trial: int = 3,
        init_val: int = 2,
        max_trials: int = 25,
        batch_arg_name: str = "batch_size",
        max_memory_mb: float | None = None,
    ) -> int:
        """The largest batch size whose `steps_per_trial` training steps run, set on the model (or datamodule).

        mode "power" doubles until a step runs out of memory; "binsearch" then bisects. The search also ends
        after max_trials trials, at the dataset's size, or (set it on CPU, where running out of memory means
        swapping) when a step's resident memory passes max_memory_mb.
        """
        if mode not in scaling.MODES:
            raise ConfigurationError(f"scale_batch_size(mode={mode!r}): use 'power' or 'binsearch'")
        if steps_per_trial < 1 or max_trials < 1 or init_val < 1:
            raise ConfigurationError("scale_batch_size needs steps_per_trial, max_trials and init_val of 1 or more")
        attribute = scaling.BatchSizeAttribute(model, datamodule, batch_arg_name)
        callbacks = [scaling.MemoryCap(max_memory_mb)] if max_memory_mb is not None else []
        dataset_size: list[int | None] = [None]

        def fits(size: int) -> bool:
            attribute.set(size)
            trainer = trial_trainer(self.trainer, callbacks, max_steps=steps_per_trial)
            try:
                trainer.fit(model, datamodule=datamodule)
            except RuntimeError as error:
                if not scaling.is_out_of_memory(error):
                    raise
                rank_zero_info(f"batch size {size}: out of memory")
                scaling.free_memory()
                return False
            dataset_size[0] = _dataset_length(trainer.train_dataloader)
            rank_zero_info(f"batch size {size}: ran {trainer.global_step} steps")
            return True

        search = scaling.power_search if mode == "power" else scaling.binary_search
        original = attribute.get()
        try:
            with _restored(model):
                found = search(fits, init_val, max_trials, lambda: dataset_size[0])
        except BaseException:
            attribute.set(original)
            raise
        attribute.set(found)
        rank_zero_info(f"batch-size finder: {batch_arg_name}={found}")
        return found


class _restored:
    """Put the model's weights and trainer back as they were, however the search ended."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def __enter__(self) -> None:
        self.state = copy.deepcopy(self.model.state_dict())
        self.trainer = getattr(self.model, "_trainer", None)

    def __exit__(self, *_: Any) -> None:
        self.model.load_state_dict(self.state)
        self.model.trainer = self.trainer


def _dataset_length(loader: Any) -> int | None:
    try:
        return len(loader.dataset)
    except (AttributeError, TypeError):
        return None


def _rate_holders(model: Any, attr_name: str) -> list[tuple[Any, str]]:
    names = (attr_name,) if attr_name else _LR_ATTRIBUTES
    for name in names:
        found = [(holder, name) for holder in (model, model.hparams)
                 if (name in holder if isinstance(holder, dict) else hasattr(holder, name))]
        if found:
            return found
    if attr_name:
        raise ConfigurationError(f"lr_find(attr_name={attr_name!r}): the model has no such attribute or hparam")
    return []


def _assign(holder: Any, name: str, value: float) -> None:
    if isinstance(holder, dict):
        holder[name] = value
    else:
        setattr(holder, name, value)
