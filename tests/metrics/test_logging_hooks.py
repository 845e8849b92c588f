"""Where self.log may be called, and what it records there by default (callbacks log through the module)."""

from __future__ import annotations

import pytest
import torch

import trellis
from support import TinyRegressor, loader, quiet_trainer
from trellis.errors import ConfigurationError


class FromCallbacks(trellis.Callback):
    """Logs the batch index (or a constant) from training and validation hooks, with the hooks' defaults."""

    def on_train_start(self, trainer, pl_module):
        pl_module.log("train_start", 3.0)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        pl_module.log("train_batch_start", float(batch_idx))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        pl_module.log("train_batch_end", float(batch_idx), batch_size=1)

    def on_after_backward(self, trainer, pl_module):
        pl_module.log("after_backward", 1.0)

    def on_train_epoch_end(self, trainer, pl_module):
        pl_module.log("train_epoch_end", 5.0)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        pl_module.log("val_batch_end", float(batch_idx), batch_size=1)

    def on_validation_epoch_end(self, trainer, pl_module):
        pl_module.log("val_epoch_end", 7.0)


def test_each_hook_gets_lightnings_defaults(recording_logger):
    trainer = quiet_trainer(max_epochs=1, logger=recording_logger, log_every_n_steps=1, callbacks=[FromCallbacks()],
                            num_sanity_val_steps=0, limit_val_batches=3)
    trainer.fit(TinyRegressor(), loader(128), loader(128))  # 4 training batches, 3 validation batches

    # per training batch: on_step (the last value); per evaluation batch: on_epoch (the mean); epoch hooks: epoch
    assert trainer.callback_metrics["train_batch_start"].item() == 3.0
    assert trainer.callback_metrics["train_batch_end"].item() == 3.0
    assert trainer.callback_metrics["after_backward"].item() == 1.0
    assert trainer.callback_metrics["val_batch_end"].item() == pytest.approx(1.0)  # mean of 0, 1, 2
    step_rows = recording_logger.rows_with("train_batch_end")
    assert [row["train_batch_end"] for _, row in step_rows] == [0.0, 1.0, 2.0, 3.0]
    (epoch_row,) = recording_logger.rows_with("train_epoch_end")
    assert epoch_row == (3, {"train_start": 3.0, "train_epoch_end": 5.0, "epoch": 0})
    (validation_row,) = recording_logger.rows_with("val_epoch_end")
    assert validation_row[1]["val_batch_end"] == pytest.approx(1.0)


class LogsIn(TinyRegressor):
    """Logs `x` in one hook, with the given self.log arguments."""

    def __init__(self, hook: str, **arguments) -> None:
        super().__init__()
        self.hook, self.arguments = hook, arguments

    def _log(self, hook: str) -> None:
        if hook == self.hook:
            self.log("x", 1.0, **self.arguments)

    def setup(self, stage):
        self._log("setup")

    def on_fit_start(self):
        self._log("on_fit_start")

    def configure_optimizers(self):
        self._log("configure_optimizers")
        return super().configure_optimizers()

    def on_train_end(self):
        self._log("on_train_end")

    def on_validation_end(self):
        self._log("on_validation_end")

    def on_save_checkpoint(self, checkpoint):
        self._log("on_save_checkpoint")

    def on_before_batch_transfer(self, batch, dataloader_idx):
        self._log("on_before_batch_transfer")
        return batch

    def on_train_epoch_end(self):
        self._log("on_train_epoch_end")

    def predict_step(self, batch, batch_idx):
        self._log("predict_step")
        return self.net(batch[0])


@pytest.mark.parametrize("hook", ["setup", "on_fit_start", "configure_optimizers", "on_train_end",
                                  "on_validation_end", "on_save_checkpoint", "on_before_batch_transfer"])
def test_hooks_that_cannot_log_say_so(hook, tmp_path):
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, enable_checkpointing=True,
                            default_root_dir=tmp_path)
    with pytest.raises(ConfigurationError, match=r"self\.log\('x'\) was called"):
        trainer.fit(LogsIn(hook), loader(64), loader(32))


def test_prediction_cannot_log():
    with pytest.raises(ConfigurationError, match="predict_step, where logging is not supported"):
        quiet_trainer().predict(LogsIn("predict_step"), loader(32))


@pytest.mark.parametrize(("arguments", "message"), [
    ({"on_step": True}, "on_step=True.*once per epoch"),
    ({"on_epoch": False}, "on_epoch=False.*once per epoch"),
])
def test_epoch_hooks_refuse_step_values(arguments, message):
    with pytest.raises(ConfigurationError, match=message):
        quiet_trainer(max_epochs=1, limit_val_batches=0).fit(LogsIn("on_train_epoch_end", **arguments), loader(64))


def test_logging_neither_on_step_nor_on_epoch_is_refused():
    class Neither(TinyRegressor):
        def validation_step(self, batch, batch_idx):
            self.log("x", 1.0, on_epoch=False)  # validation_step does not log on step by default

    with pytest.raises(ConfigurationError, match="is not useful"):
        quiet_trainer(max_epochs=1).fit(Neither(), loader(64), loader(32))


def test_a_module_not_attached_to_a_trainer_drops_the_value_with_a_warning():
    module = TinyRegressor()
    with pytest.warns(UserWarning, match="not attached to a Trainer"):
        module.training_step(next(iter(loader(8))), 0)


def test_logging_after_fit_outside_the_loops_is_refused():
    module = TinyRegressor()
    quiet_trainer(max_steps=1).fit(module, loader(32))
    with pytest.raises(ConfigurationError, match="where the Trainer does not log"):
        module.training_step(next(iter(loader(8))), 0)


def test_hooks_monitored_by_the_simple_profiler_still_log(tmp_path):
    trainer = quiet_trainer(max_epochs=1, profiler="simple", callbacks=[FromCallbacks()], num_sanity_val_steps=0,
                            default_root_dir=tmp_path)
    trainer.fit(TinyRegressor(), loader(64), loader(64))
    assert trainer.callback_metrics["train_epoch_end"].item() == 5.0
    assert torch.is_tensor(trainer.callback_metrics["val_batch_end"])


def test_callbacks_log_with_self_log_as_lightning_binds_it():
    class LogsItself(trellis.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            self.log("epoch_start", 2)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.log_dict({"batch_end": 3.0})

    trainer = quiet_trainer(max_epochs=1, limit_val_batches=0, callbacks=[LogsItself()])
    trainer.fit(TinyRegressor(), loader(64))
    assert trainer.callback_metrics["epoch_start"].item() == 2.0
    assert trainer.callback_metrics["batch_end"].item() == 3.0
