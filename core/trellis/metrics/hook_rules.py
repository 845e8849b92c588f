"""Where self.log may be called, and its on_step/on_epoch defaults there: Lightning's rules, hook by hook.

Per-batch training code logs each step by default; evaluation batches and every epoch-level hook log the
epoch's reduction. Setup, teardown, checkpoint, data-transfer and prediction hooks cannot log: their values
would belong to no step and no epoch.
"""

from __future__ import annotations

from typing import NamedTuple

from trellis.errors import ConfigurationError


class LoggingRule(NamedTuple):
    default_on_step: bool
    default_on_epoch: bool
    #: False when the hook runs once per epoch (or loop): its values can only be epoch values.
    on_step_allowed: bool


_PER_TRAINING_BATCH = LoggingRule(True, False, True)
_PER_EVALUATION_BATCH = LoggingRule(False, True, True)
_PER_EPOCH = LoggingRule(False, True, False)

RULES: dict[str, LoggingRule] = {
    **dict.fromkeys((
        "training_step", "on_train_batch_start", "on_train_batch_end", "on_before_backward", "backward",
        "on_after_backward", "on_before_optimizer_step", "optimizer_step", "configure_gradient_clipping",
        "clip_gradients", "on_before_zero_grad", "optimizer_zero_grad",
    ), _PER_TRAINING_BATCH),
    **dict.fromkeys((
        "validation_step", "test_step", "on_validation_batch_start", "on_validation_batch_end",
        "on_test_batch_start", "on_test_batch_end",
    ), _PER_EVALUATION_BATCH),
    **dict.fromkeys((
        "on_train_start", "on_validation_start", "on_test_start", "on_train_epoch_start", "on_train_epoch_end",
        "on_validation_epoch_start", "on_validation_epoch_end", "on_test_epoch_start", "on_test_epoch_end",
    ), _PER_EPOCH),
}


def resolve_levels(fx: str, name: str, on_step: bool | None, on_epoch: bool | None) -> tuple[bool, bool]:
    """on_step and on_epoch for a self.log call in the hook `fx`: the hook's defaults where not given.

    Raises where the hook cannot log at all, or not at the level asked for.
    """
    rule = RULES.get(fx)
    if rule is None:
        raise ConfigurationError(
            f"self.log({name!r}) was called in {fx}, where logging is not supported: its value would belong to "
            "no training step and no epoch. Log it from a step method or an epoch hook, or write to the logger "
            "directly with self.logger.experiment / self.logger.log_metrics."
        )
    on_step = rule.default_on_step if on_step is None else on_step
    on_epoch = rule.default_on_epoch if on_epoch is None else on_epoch
    if on_step and not rule.on_step_allowed:
        raise ConfigurationError(
            f"self.log({name!r}, on_step=True) was called in {fx}, which runs once per epoch: only epoch values "
            "can be logged there. Leave on_step unset (or False)."
        )
    if not on_epoch and not rule.on_step_allowed:
        raise ConfigurationError(
            f"self.log({name!r}, on_epoch=False) was called in {fx}, which runs once per epoch: only epoch "
            "values can be logged there. Leave on_epoch unset (or True)."
        )
    if not on_step and not on_epoch:
        raise ConfigurationError(
            f"self.log({name!r}, on_step=False, on_epoch=False) is not useful: it records nothing. Set "
            "on_step=True for the value of each step, on_epoch=True for its reduction over the epoch, or both."
        )
    return on_step, on_epoch
