"""Trainer flags, loops, callbacks and the errors users can cause."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import trellis
from support import TinyRegressor, loader, quiet_trainer
from trellis.callbacks import EarlyStopping, EarlyStoppingReason, ModelCheckpoint
from trellis.errors import ConfigurationError, PluginNotFoundError, TrainingError


def test_max_steps_and_limit_batches():
    trainer = quiet_trainer(max_steps=5, limit_train_batches=3)
    trainer.fit(TinyRegressor(), loader())
    assert trainer.global_step == 5
    assert trainer.current_epoch == 2  # as in Lightning: an epoch stopped by max_steps still ends (hooks, checkpoint)


def test_validation_every_n_batches_and_every_n_epochs():
    counts = {"validation": 0}

    class Count(trellis.Callback):
        def on_validation_end(self, trainer):
            if not trainer.sanity_checking:
                counts["validation"] += 1

    quiet_trainer(max_epochs=2, val_check_interval=0.5, num_sanity_val_steps=0, callbacks=[Count()]).fit(
        TinyRegressor(), loader(), loader(64))
    assert counts["validation"] == 4
    counts["validation"] = 0
    quiet_trainer(max_epochs=4, check_val_every_n_epoch=2, num_sanity_val_steps=0, callbacks=[Count()]).fit(
        TinyRegressor(), loader(), loader(64))
    assert counts["validation"] == 2


def test_metrics_logged_on_step_and_epoch_are_aggregated_by_batch_size():
    class Logs(TinyRegressor):
        def training_step(self, batch, batch_idx):
            self.log("constant", float(batch_idx), on_step=True, on_epoch=True)
            return super().training_step(batch, batch_idx)

    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(Logs(), loader(96, batch_size=32))
    assert float(trainer.callback_metrics["constant_epoch"]) == pytest.approx(1.0)
    assert float(trainer.callback_metrics["constant_step"]) == 2.0


def test_early_stopping_stops_when_the_metric_stalls():
    class Stalls(TinyRegressor):
        def validation_step(self, batch, batch_idx):
            self.log("val_loss", torch.tensor(1.0))

    stopper = EarlyStopping(monitor="val_loss", patience=2)
    trainer = quiet_trainer(max_epochs=20, callbacks=[stopper])
    trainer.fit(Stalls(), loader(64), loader(32))
    assert trainer.current_epoch == 3  # improvement at epoch 0, two stalls
    assert stopper.stopping_reason == EarlyStoppingReason.PATIENCE_EXHAUSTED
    assert "did not improve" in stopper.stopping_reason_message


def test_model_checkpoint_keeps_the_best_k_and_test_uses_the_best(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss", save_top_k=2, filename="{epoch}-{val_loss:.4f}",
                                 save_last=True)
    trainer = quiet_trainer(max_epochs=4, callbacks=[checkpoint], enable_checkpointing=True)
    module = TinyRegressor()
    trainer.fit(module, loader(), loader(64))
    saved = sorted(path.name for path in tmp_path.glob("*.ckpt"))
    assert len(saved) == 3 and "last.ckpt" in saved
    scores = sorted(checkpoint.best_k_models.values())
    assert checkpoint.best_model_score == scores[0]
    assert f"val_loss={scores[0]:.4f}" in checkpoint.best_model_path
    results = trainer.validate(dataloaders=loader(64), verbose=False)
    assert results[0]["val_loss"] == pytest.approx(float(scores[0]), rel=1e-5)  # scores are tensors, as in Lightning


def test_resume_from_checkpoint_continues_the_run(tmp_path):
    torch.manual_seed(0)
    uninterrupted = TinyRegressor()
    quiet_trainer(max_epochs=4).fit(uninterrupted, loader(shuffle=False))

    torch.manual_seed(0)
    first = TinyRegressor()
    trainer = quiet_trainer(max_epochs=2)
    trainer.fit(first, loader(shuffle=False))
    trainer.save_checkpoint(tmp_path / "mid.ckpt")

    resumed = TinyRegressor()
    trainer = quiet_trainer(max_epochs=4)
    trainer.fit(resumed, loader(shuffle=False), ckpt_path=tmp_path / "mid.ckpt")
    assert trainer.global_step == 32
    for expected, actual in zip(uninterrupted.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(expected, actual)


def test_load_from_checkpoint_rebuilds_with_hyperparameters_and_overrides(tmp_path):
    module = TinyRegressor(lr=0.2)
    trainer = quiet_trainer(max_steps=2)
    trainer.fit(module, loader())
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    restored = TinyRegressor.load_from_checkpoint(tmp_path / "model.ckpt")
    assert restored.hparams.lr == 0.2
    assert all(torch.equal(a, b) for a, b in zip(module.state_dict().values(), restored.state_dict().values()))
    assert TinyRegressor.load_from_checkpoint(tmp_path / "model.ckpt", lr=0.5).hparams.lr == 0.5


def test_nan_loss_stops_with_a_clear_error_and_keeps_saved_checkpoints(tmp_path):
    class Diverges(TinyRegressor):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return loss * float("nan") if self.global_step >= 3 else loss

    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1)
    trainer = quiet_trainer(max_epochs=1, callbacks=[checkpoint], enable_checkpointing=True)
    with pytest.raises(TrainingError, match="loss became nan.*global step 3.*gradient_clip_val"):
        trainer.fit(Diverges(), loader())
    saved = trellis.checkpointing.load_checkpoint_file(tmp_path / "epoch=0-step=2.ckpt")
    assert all(torch.isfinite(value).all() for value in saved["state_dict"].values())


def test_empty_dataloader_is_a_clear_error():
    empty = DataLoader(TensorDataset(torch.zeros(0, 8), torch.zeros(0, 1)), batch_size=4)
    with pytest.raises(TrainingError, match="yields no batches"):
        quiet_trainer(max_epochs=1).fit(TinyRegressor(), empty)


def test_unknown_flag_suggests_the_nearest_one():
    with pytest.raises(ConfigurationError, match="did you mean 'max_epochs'"):
        trellis.Trainer(max_epoch=3)


def test_unknown_plugin_name_lists_installed_names():
    with pytest.raises(PluginNotFoundError, match=r"Installed accelerator names: .*cpu"):
        trellis.Trainer(accelerator="quantum")


def test_too_many_devices_for_single_device_strategy_says_what_to_use():
    with pytest.raises(ConfigurationError, match="strategy='ddp'"):
        trellis.Trainer(accelerator="cpu", strategy="single_device", devices=2)


def test_returning_none_skips_backward_and_dict_results_work():
    class Skips(TinyRegressor):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return None if batch_idx % 2 else {"loss": loss, "log": {"classic": loss}}

    trainer = quiet_trainer(max_epochs=1, limit_train_batches=4)
    model = Skips()
    before = [parameter.clone() for parameter in model.parameters()]
    trainer.fit(model, loader())
    assert trainer.global_step == 4  # as in Lightning, the optimizer step still runs (and counts) without a loss
    assert "classic" in trainer.callback_metrics
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_predict_returns_predictions_and_test_returns_metrics():
    class WithTest(TinyRegressor):
        def test_step(self, batch, batch_idx):
            self.log("test_loss", torch.nn.functional.mse_loss(self.net(batch[0]), batch[1]))

        def predict_step(self, batch, batch_idx):
            return self.net(batch[0])

    module = WithTest()
    trainer = quiet_trainer(max_steps=2)
    trainer.fit(module, loader())
    predictions = trainer.predict(module, loader(64))
    assert len(predictions) == 2 and predictions[0].shape == (32, 1)
    results = trainer.test(module, loader(64), verbose=False)
    assert math.isfinite(results[0]["test_loss"])


def test_default_optimizer_is_adam_when_not_configured(capsys):
    class NoOptimizer(TinyRegressor):
        configure_optimizers = trellis.Module.configure_optimizers

    trainer = quiet_trainer(max_steps=1)
    trainer.fit(NoOptimizer(), loader())
    assert isinstance(trainer.optimizers[0], torch.optim.Adam)
    assert "Adam(lr=1e-3)" in capsys.readouterr().out


def test_csv_logger_writes_metrics_and_hparams(tmp_path):
    trainer = trellis.Trainer(logger="csv", max_epochs=2, default_root_dir=tmp_path, enable_progress_bar=False,
                              enable_model_summary=False, log_every_n_steps=2)
    trainer.fit(TinyRegressor(lr=0.01), loader(), loader(64))
    log_dir = tmp_path / "lightning_logs" / "version_0"
    rows = (log_dir / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",")[:2] == ["step", "epoch"] and "val_loss" in rows[0]
    assert "lr: 0.01" in (log_dir / "hparams.yaml").read_text()
    assert list((log_dir / "checkpoints").glob("*.ckpt"))


def test_a_lightning_checkpoint_is_migrated_loaded_and_resumed_from_the_next_epoch(tmp_path):
    source = TinyRegressor(lr=0.3)
    optimizer = torch.optim.SGD(source.parameters(), lr=0.3)
    lightning_checkpoint = {  # the layout Lightning 2.x writes
        "epoch": 1, "global_step": 16, "pytorch-lightning_version": "2.6.0", "state_dict": source.state_dict(),
        "loops": {"fit_loop": {"state_dict": {}}}, "callbacks": {}, "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [], "hparams_name": "kwargs", "hyper_parameters": {"lr": 0.3},
    }
    torch.save(lightning_checkpoint, tmp_path / "lightning.ckpt")
    restored = TinyRegressor.load_from_checkpoint(tmp_path / "lightning.ckpt")
    assert restored.hparams.lr == 0.3
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), restored.state_dict().values()))
    trainer = quiet_trainer(max_epochs=3)
    trainer.fit(TinyRegressor(), loader(), ckpt_path=tmp_path / "lightning.ckpt")
    assert trainer.global_step == 16 + 8  # epoch 2 only
