"""EarlyStopping as Lightning users observe it: when it stops, why (EarlyStoppingReason and the message), its
state in checkpoints, its messages and errors."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from support import TinyRegressor, loader, quiet_trainer
from trellis.callbacks import EarlyStopping, EarlyStoppingReason, ModelCheckpoint
from trellis.errors import ConfigurationError


class ScriptedLoss(TinyRegressor):
    """Logs `val_loss` = losses[epoch] in every validation."""

    def __init__(self, losses: list[float]) -> None:
        super().__init__()
        self.losses = losses

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", torch.tensor(self.losses[self.current_epoch]))


def fit(stopper: EarlyStopping, losses: list[float], **flags):
    trainer = quiet_trainer(max_epochs=len(losses), callbacks=[stopper], **flags)
    trainer.fit(ScriptedLoss(losses), loader(64), loader(32))
    return trainer


def first_stop(losses: list[float], patience: int, min_delta: float = 0.0) -> tuple[int, float]:
    """The epoch a plain reading of the rule stops at (`patience` checks in a row not better than the best by
    more than min_delta), and the best score then."""
    best, waited = math.inf, 0
    for epoch, loss in enumerate(losses):
        if loss < best - min_delta:
            best, waited = loss, 0
        else:
            waited += 1
            if waited >= patience:
                return epoch, best
    return len(losses) - 1, best


@pytest.mark.parametrize(("losses", "patience", "min_delta"), [
    ([6.0, 5.0, 5.0, 5.0, 5.0, 5.0], 3, 0.0), ([6.0, 5.0, 4.0, 4.0, 3.0, 3.0], 1, 0.0),
    ([6.0, 5.0, 6.0, 5.0, 5.0, 5.0], 3, 0.0),
    ([1.0, 0.95, 0.92, 0.91, 0.9, 0.5], 2, 0.05),
])
def test_stops_when_patience_is_exhausted(losses, patience, min_delta):
    stopper = EarlyStopping(monitor="val_loss", patience=patience, min_delta=min_delta)
    trainer = fit(stopper, losses)
    stopped, best = first_stop(losses, patience, min_delta)
    assert trainer.current_epoch - 1 == stopped == stopper.stopped_epoch
    assert stopper.stopping_reason == EarlyStoppingReason.PATIENCE_EXHAUSTED
    assert stopper.stopping_reason_message == (
        f"Monitored metric val_loss did not improve in the last {patience} records. Best score: {best:.3f}. "
        "Signaling Trainer to stop.")


def test_training_that_keeps_improving_is_not_stopped():
    stopper = EarlyStopping(monitor="val_loss")
    fit(stopper, [4.0, 3.0, 2.0])
    assert stopper.stopping_reason == EarlyStoppingReason.NOT_STOPPED and stopper.stopping_reason_message is None
    assert stopper.stopped_epoch == 0


@pytest.mark.parametrize(("arguments", "losses", "epoch", "reason", "message"), [
    ({"stopping_threshold": 0.5}, [1.0, 0.6, 0.4, 0.3], 2, EarlyStoppingReason.STOPPING_THRESHOLD,
     "Stopping threshold reached: val_loss = 0.4000000059604645 < 0.5. Signaling Trainer to stop."),
    ({"divergence_threshold": 5.0}, [1.0, 3.0, 6.0, 1.0], 2, EarlyStoppingReason.DIVERGENCE_THRESHOLD,
     "Divergence threshold reached: val_loss = 6.0 < 5.0. Signaling Trainer to stop."),
    ({}, [1.0, math.inf, 0.5], 1, EarlyStoppingReason.NON_FINITE_METRIC,
     "Monitored metric val_loss = inf is not finite. Previous best value was 1.000. Signaling Trainer to stop."),
])
def test_thresholds_and_non_finite_values_stop_at_once(arguments, losses, epoch, reason, message):
    stopper = EarlyStopping(monitor="val_loss", patience=10, **arguments)
    trainer = fit(stopper, losses)
    assert trainer.current_epoch - 1 == epoch
    assert stopper.stopping_reason == reason
    assert stopper.stopping_reason_message.replace("tensor(", "").replace(")", "") == message


def test_a_non_finite_value_is_a_stall_without_check_finite():
    stopper = EarlyStopping(monitor="val_loss", patience=2, check_finite=False)
    trainer = fit(stopper, [1.0, math.nan, math.nan, 0.5])
    assert trainer.current_epoch == 3 and stopper.stopping_reason == EarlyStoppingReason.PATIENCE_EXHAUSTED


def test_mode_max_stops_when_the_metric_stops_rising():
    stopper = EarlyStopping(monitor="val_loss", mode="max", patience=1)
    trainer = fit(stopper, [0.1, 0.5, 0.4, 0.9])
    assert trainer.current_epoch == 3


def test_verbose_messages(caplog):
    stopper = EarlyStopping(monitor="val_loss", patience=1, verbose=True)
    with caplog.at_level(logging.INFO):
        fit(stopper, [2.0, 1.5, 1.6])
    assert "Metric val_loss improved. New best score: 2.000" in caplog.text
    assert "Metric val_loss improved by 0.500 >= min_delta = 0.0. New best score: 1.500" in caplog.text
    assert "did not improve in the last 1 records" in caplog.text


def test_state_key_and_state_survive_a_checkpoint(tmp_path):
    stopper = EarlyStopping(monitor="val_loss", patience=5)
    assert stopper.state_key == "EarlyStopping{'monitor': 'val_loss', 'mode': 'min'}"
    checkpoint = ModelCheckpoint(dirpath=tmp_path)
    trainer = quiet_trainer(max_epochs=3, callbacks=[stopper, checkpoint])
    trainer.fit(ScriptedLoss([3.0, 2.0, 2.5]), loader(64), loader(32))
    saved = torch.load(checkpoint.best_model_path, weights_only=True)["callbacks"][stopper.state_key]
    assert saved == {"wait_count": 1, "stopped_epoch": 0, "best_score": torch.tensor(2.0), "patience": 5,
                     "stopping_reason": 0, "stopping_reason_message": None}

    restored = EarlyStopping(monitor="val_loss", patience=5)
    restored.load_state_dict({**saved, "stopping_reason": 3})
    assert restored.wait_count == 1 and float(restored.best_score) == 2.0
    assert restored.stopping_reason == EarlyStoppingReason.PATIENCE_EXHAUSTED


def test_a_missing_metric_is_an_error_unless_not_strict():
    with pytest.raises(RuntimeError, match="Early stopping conditioned on metric `val_acc` which is not available"):
        fit(EarlyStopping(monitor="val_acc"), [1.0, 1.0])
    trainer = fit(EarlyStopping(monitor="val_acc", strict=False), [1.0, 1.0])
    assert trainer.current_epoch == 2


def test_an_unknown_mode_is_refused():
    with pytest.raises(ConfigurationError, match="`mode` can be min, max, got unknown_option"):
        EarlyStopping(monitor="val_loss", mode="unknown_option")
