"""ModelCheckpoint as Lightning users observe it: file names, which files are kept, the best-k bookkeeping (as
tensors), `last`, its state in checkpoints and on resume, messages and configuration errors."""

from __future__ import annotations

import logging
import math
import os

import pytest
import torch

from support import TinyRegressor, loader, quiet_trainer
from trellis.callbacks import ModelCheckpoint
from trellis.errors import ConfigurationError


class ScriptedScore(TinyRegressor):
    """Logs `val_loss` = scores[epoch] in every validation (and trains as usual)."""

    def __init__(self, scores: list[float]) -> None:
        super().__init__()
        self.scores = scores

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", torch.tensor(self.scores[self.current_epoch]))


def fit(callback: ModelCheckpoint, module=None, epochs: int = 4, **flags):
    trainer = quiet_trainer(max_epochs=epochs, callbacks=[callback], **flags)
    trainer.fit(module if module is not None else TinyRegressor(), loader(64), loader(32))
    return trainer


def names(directory) -> list[str]:
    return sorted(os.listdir(directory))


@pytest.mark.parametrize(("template", "metrics", "expected"), [
    (None, {"epoch": 2, "step": 30}, "epoch=2-step=30.ckpt"),
    ("{epoch:03d}", {"epoch": 5}, "epoch=005.ckpt"),
    ("{epoch}-{val_loss:.2f}", {"epoch": 2, "val_loss": torch.tensor(0.123456)}, "epoch=2-val_loss=0.12.ckpt"),
    ("{missing:d}", {}, "missing=0.ckpt"),
    ("sample-{epoch:02d}-{val/acc:.1f}", {"epoch": 3, "val/acc": torch.tensor(0.87)},
     "sample-epoch=03-val/acc=0.9.ckpt"),
])
def test_filename_templates_are_filled_as_lightning_fills_them(tmp_path, template, metrics, expected):
    callback = ModelCheckpoint(dirpath=tmp_path, filename=template)
    assert callback.format_checkpoint_name(metrics) == os.path.join(tmp_path, expected)


def test_auto_insert_metric_name_off_leaves_the_template_as_written(tmp_path):
    callback = ModelCheckpoint(dirpath=tmp_path, filename="e{epoch}_loss{val/loss:.1f}", auto_insert_metric_name=False)
    assert os.path.basename(callback.format_checkpoint_name({"epoch": 1, "val/loss": 0.25})) == "e1_loss0.2.ckpt"
    assert callback.format_checkpoint_name({"epoch": 1, "val/loss": 0.25}, ver=2).endswith("e1_loss0.2-v2.ckpt")


def test_the_best_k_are_kept_by_score_with_tensors_as_lightning_has_them(tmp_path):
    scores = [0.5, 0.3, 0.4, 0.2, 0.6]
    callback = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss", save_top_k=2, filename="{epoch}")
    fit(callback, ScriptedScore(scores), epochs=5)
    best_two = sorted(range(5), key=scores.__getitem__)[:2]  # epochs 3 and 1
    assert names(tmp_path) == sorted(f"epoch={epoch}.ckpt" for epoch in best_two)
    assert {os.path.basename(path): float(score) for path, score in callback.best_k_models.items()} == {
        f"epoch={epoch}.ckpt": pytest.approx(scores[epoch]) for epoch in best_two}
    assert all(isinstance(score, torch.Tensor) for score in callback.best_k_models.values())
    assert callback.best_model_path == os.path.join(tmp_path, "epoch=3.ckpt")
    assert float(callback.best_model_score) == pytest.approx(0.2)
    assert callback.kth_best_model_path == os.path.join(tmp_path, "epoch=1.ckpt")
    assert float(callback.kth_value) == pytest.approx(0.3)


def test_mode_max_keeps_the_highest(tmp_path):
    callback = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss", mode="max", filename="{epoch}")
    fit(callback, ScriptedScore([0.5, 0.9, 0.4]), epochs=3)
    assert names(tmp_path) == ["epoch=1.ckpt"]
    assert float(callback.best_model_score) == pytest.approx(0.9)


def test_a_nan_score_ranks_last(tmp_path):
    callback = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss", save_top_k=2, filename="{epoch}")
    fit(callback, ScriptedScore([math.nan, 0.3, 0.4]), epochs=3)
    assert names(tmp_path) == ["epoch=1.ckpt", "epoch=2.ckpt"]


def test_a_name_taken_by_another_file_gets_a_version_suffix(tmp_path):
    (tmp_path / "epoch=0.ckpt").write_bytes(b"someone else's")
    callback = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", monitor="val_loss", save_top_k=-1)
    with pytest.warns(UserWarning, match=f"Checkpoint directory {tmp_path} exists and is not empty"):
        fit(callback, ScriptedScore([0.3, 0.2]), epochs=2)
    assert names(tmp_path) == ["epoch=0-v1.ckpt", "epoch=0.ckpt", "epoch=1.ckpt"]
    assert (tmp_path / "epoch=0.ckpt").read_bytes() == b"someone else's"


def test_the_latest_checkpoint_replaces_its_own_name(tmp_path):
    callback = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", every_n_train_steps=1, save_top_k=-1)
    fit(callback, epochs=1)  # 2 steps in one epoch, one name: without a monitor the second replaces the first
    assert names(tmp_path) == ["epoch=0.ckpt"]
    assert torch.load(tmp_path / "epoch=0.ckpt", weights_only=True)["global_step"] == 2


def test_without_the_version_counter_a_clash_overwrites(tmp_path):
    (tmp_path / "epoch=0.ckpt").write_bytes(b"someone else's")
    callback = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", enable_version_counter=False)
    with pytest.warns(UserWarning, match="exists and is not empty"):
        fit(callback, epochs=1)
    assert names(tmp_path) == ["epoch=0.ckpt"]
    assert torch.load(tmp_path / "epoch=0.ckpt", weights_only=True)["global_step"] == 2


def test_without_a_monitor_the_latest_replaces_the_previous(tmp_path):
    callback = ModelCheckpoint(dirpath=tmp_path)
    fit(callback, epochs=3)
    assert names(tmp_path) == ["epoch=2-step=6.ckpt"]
    assert callback.best_model_path == os.path.join(tmp_path, "epoch=2-step=6.ckpt")
    assert callback.best_k_models == {} and callback.best_model_score is None


def test_save_last_writes_last_ckpt_whenever_a_checkpoint_is_saved(tmp_path):
    callback = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss", save_last=True, filename="{epoch}")
    fit(callback, ScriptedScore([0.3, 0.5, 0.2, 0.4]), epochs=4)
    assert names(tmp_path) == ["epoch=2.ckpt", "last.ckpt"]
    assert callback.last_model_path == os.path.join(tmp_path, "last.ckpt")
    # last follows the saves: epoch 3 was not in the top 1, so last holds epoch 2
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["epoch"] == 2


def test_the_last_name_can_be_a_template(tmp_path):
    class EpochLast(ModelCheckpoint):
        CHECKPOINT_NAME_LAST = "{epoch}-last"

    callback = EpochLast(dirpath=tmp_path, save_last=True, save_top_k=0)
    fit(callback, epochs=2)
    # nothing else was saved, so last is written when training ends, after the second epoch
    assert names(tmp_path) == ["epoch=2-last.ckpt"]


def test_save_last_link_points_at_the_latest_checkpoint(tmp_path):
    callback = ModelCheckpoint(dirpath=tmp_path, save_last="link")
    fit(callback, epochs=2)
    link = tmp_path / "last.ckpt"
    assert link.is_symlink() and os.readlink(link) == "epoch=1-step=4.ckpt"


def test_step_checkpoints_wait_for_the_validation_metric(tmp_path):
    callback = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss", every_n_train_steps=1, save_top_k=-1,
                               filename="{step}", save_on_train_epoch_end=False)
    fit(callback, ScriptedScore([0.3]), epochs=1)
    # step 1 has no val_loss yet: its save waits for the validation after step 2, which saves once
    assert names(tmp_path) == ["step=2.ckpt"]


def test_state_key_and_state_dict_are_lightnings(tmp_path):
    callback = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss", save_top_k=2)
    assert callback.state_key == ("ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', 'every_n_train_steps': 0, "
                                  "'every_n_epochs': 1, 'train_time_interval': None}")
    trainer = fit(callback, ScriptedScore([0.3, 0.2]), epochs=2)
    saved = torch.load(callback.best_model_path, weights_only=True)["callbacks"][callback.state_key]
    assert set(saved) == {"monitor", "best_model_score", "best_model_path", "current_score", "dirpath",
                          "best_k_models", "kth_best_model_path", "kth_value", "last_model_path"}
    assert saved["dirpath"] == str(tmp_path)
    assert trainer.checkpoint_callback is callback


def test_callbacks_without_state_are_left_out_of_checkpoints(tmp_path):
    callback = ModelCheckpoint(dirpath=tmp_path)
    fit(callback, epochs=1, enable_model_summary=True)
    assert list(torch.load(callback.best_model_path, weights_only=True)["callbacks"]) == [callback.state_key]


def test_a_resumed_fit_keeps_the_best_k_and_never_removes_the_checkpoint_it_resumed_from(tmp_path):
    first = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss", save_top_k=2, filename="{epoch}")
    fit(first, ScriptedScore([0.3, 0.2, 0.9, 0.9]), epochs=2)
    resumed = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss", save_top_k=2, filename="{epoch}")
    trainer = quiet_trainer(max_epochs=4, callbacks=[resumed])
    trainer.fit(ScriptedScore([0.3, 0.2, 0.1, 0.05]), loader(64), loader(32), ckpt_path=first.kth_best_model_path)
    # epoch=0.ckpt (resumed from, knowing only itself) stays though it left the top 2; the resumed epoch 1 found
    # the first run's epoch=1.ckpt and wrote epoch=1-v1.ckpt, which left the top 2 and was removed
    assert names(tmp_path) == ["epoch=0.ckpt", "epoch=1.ckpt", "epoch=2.ckpt", "epoch=3.ckpt"]
    assert sorted(os.path.basename(path) for path in resumed.best_k_models) == ["epoch=2.ckpt", "epoch=3.ckpt"]


def test_a_changed_dirpath_restores_only_the_best_path(tmp_path):
    first = ModelCheckpoint(dirpath=tmp_path / "a", monitor="val_loss")
    fit(first, ScriptedScore([0.3, 0.2]), epochs=2)
    moved = ModelCheckpoint(dirpath=tmp_path / "b", monitor="val_loss")
    trainer = quiet_trainer(max_epochs=2, callbacks=[moved])
    with pytest.warns(UserWarning, match="The dirpath has changed"):
        trainer.fit(ScriptedScore([0.3, 0.2]), loader(64), loader(32), ckpt_path=first.best_model_path)
    assert moved.best_model_path == first.best_model_path and moved.best_k_models == {}


def test_verbose_messages(tmp_path, caplog):
    callback = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss", verbose=True, filename="{epoch}")
    with caplog.at_level(logging.INFO):
        fit(callback, ScriptedScore([0.3, 0.5]), epochs=2)
    assert (f"Epoch 0, global step 2: 'val_loss' reached 0.30000 (best 0.30000), saving model to "
            f"'{tmp_path / 'epoch=0.ckpt'}' as top 1") in caplog.text
    assert "Epoch 1, global step 4: 'val_loss' was not in top 1" in caplog.text


def test_save_on_exception_keeps_the_state_of_the_failure(tmp_path):
    class FailsAtStepThree(TinyRegressor):
        def training_step(self, batch, batch_idx):
            if self.global_step == 3:
                raise RuntimeError("data went missing")
            return super().training_step(batch, batch_idx)

    callback = ModelCheckpoint(dirpath=tmp_path, save_on_exception=True, save_last=True)
    with pytest.raises(RuntimeError, match="data went missing"):
        fit(callback, FailsAtStepThree(), epochs=3)
    assert names(tmp_path) == ["epoch=0-step=2.ckpt", "epoch=1-step=3.ckpt", "last.ckpt"]
    assert torch.load(tmp_path / "epoch=1-step=3.ckpt", weights_only=True)["global_step"] == 3


def test_save_weights_only_writes_the_weights_alone(tmp_path):
    callback = ModelCheckpoint(dirpath=tmp_path, save_weights_only=True)
    fit(callback, epochs=1)
    assert "optimizer_states" not in torch.load(callback.best_model_path, weights_only=True)


def test_a_monitored_metric_that_is_never_logged_is_an_error_after_validation(tmp_path):
    callback = ModelCheckpoint(dirpath=tmp_path, monitor="val_acc")
    with pytest.raises(ConfigurationError, match=r"could not find the monitored key .* `log\('val_acc', value\)`"):
        fit(callback, epochs=1)


@pytest.mark.parametrize(("arguments", "message"), [
    ({"mode": "maximum"}, "`mode` can be min, max"),
    ({"save_top_k": -2}, "save_top_k=-2. Must be >= -1"),
    ({"save_top_k": 3}, r"save_top_k=3, monitor=None\) is not a valid configuration"),
    ({"every_n_train_steps": 2, "every_n_epochs": 1}, "should be mutually exclusive"),
    ({"every_n_epochs": -1}, "every_n_epochs=-1. Must be >= 0"),
])
def test_invalid_configurations_say_what_is_wrong(arguments, message):
    with pytest.raises(ConfigurationError, match=message):
        ModelCheckpoint(**arguments)


def test_a_time_interval_counts_seconds(tmp_path):
    callback = ModelCheckpoint(dirpath=tmp_path, train_time_interval=0.0, save_top_k=-1, filename="{step}")
    assert callback.state_key.endswith("'train_time_interval': datetime.timedelta(0)}")
    fit(callback, epochs=1)
    assert names(tmp_path) == ["step=1.ckpt", "step=2.ckpt"]
