"""TensorBoard logger against real event files, read back with tensorboard's own reader and server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

from trellis.callbacks.model_checkpoint import ModelCheckpoint
from trellis_tensorboard import TensorBoardLogger


def read_events(log_dir: str) -> EventAccumulator:
    accumulator = EventAccumulator(log_dir, size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def scalar_steps(accumulator: EventAccumulator, tag: str) -> list[int]:
    return [event.step for event in accumulator.Scalars(tag)]


def event_files(log_dir) -> list[str]:
    return [name for name in os.listdir(log_dir) if name.startswith("events.out.tfevents.")]


def hparams_data(accumulator: EventAccumulator) -> dict[str, plugin_data_pb2.HParamsPluginData]:
    contents = accumulator.PluginTagToContent("hparams")
    return {tag: plugin_data_pb2.HParamsPluginData.FromString(content) for tag, content in contents.items()}


def test_fit_writes_every_step_epoch_aggregates_and_hparams_with_their_metrics(tmp_path, kit):
    trainer = kit.quiet_trainer(logger="tensorboard", max_epochs=2, default_root_dir=tmp_path)
    trainer.fit(kit.TinyRegression(learning_rate=0.05), kit.random_loader(batches=8))

    logger = trainer.logger
    assert isinstance(logger, TensorBoardLogger)
    assert logger.log_dir == os.path.join(tmp_path, "lightning_logs", "version_0")
    events = read_events(logger.log_dir)
    assert scalar_steps(events, "loss_step") == list(range(16))
    assert scalar_steps(events, "loss_epoch") == [7, 15]
    assert [event.value for event in events.Scalars("epoch")][0] == 0

    hparams = hparams_data(events)
    start = hparams["_hparams_/session_start_info"].session_start_info
    assert start.hparams["learning_rate"].number_value == pytest.approx(0.05)
    assert start.hparams["width"].number_value == 4
    metric_names = {info.name.tag for info in hparams["_hparams_/experiment"].experiment.metric_infos}
    assert {"loss_step", "loss_epoch"} <= metric_names
    assert hparams["_hparams_/session_end_info"].session_end_info.status == api_pb2.STATUS_SUCCESS


def test_experiment_is_the_native_writer_for_images_and_histograms(tmp_path):
    logger = TensorBoardLogger(save_dir=tmp_path)
    logger.experiment.add_histogram("weights", torch.arange(10.0), global_step=3)
    logger.experiment.add_image("picture", torch.rand(3, 8, 8), global_step=3)
    logger.finalize("success")

    tags = read_events(logger.log_dir).Tags()
    assert "weights" in tags["histograms"]
    assert "picture" in tags["images"]
    assert len(event_files(logger.log_dir)) == 1  # the run's one file, which a resume can cut back


def test_a_prefix_goes_before_every_scalar_tag_as_in_lightning(tmp_path):
    logger = TensorBoardLogger(save_dir=tmp_path, prefix="train")
    logger.log_metrics({"loss": 1.0}, step=3)
    logger.finalize("success")
    accumulator = read_events(logger.log_dir)
    assert accumulator.Tags()["scalars"] == ["train-loss"] and scalar_steps(accumulator, "train-loss") == [3]


def test_a_second_run_gets_the_next_version(tmp_path):
    first = TensorBoardLogger(save_dir=tmp_path)
    first.log_metrics({"loss": 1.0}, step=0)
    first.finalize("success")
    second = TensorBoardLogger(save_dir=tmp_path)
    assert (first.version, second.version) == (0, 1)


def test_resume_continues_the_same_version_without_steps_logged_twice(tmp_path, kit):
    torch.manual_seed(0)
    checkpoints = tmp_path / "checkpoints"
    every_four = ModelCheckpoint(dirpath=checkpoints, every_n_train_steps=4, save_top_k=-1, filename="{step}")
    interrupted = kit.quiet_trainer(logger="tensorboard", max_steps=6, default_root_dir=tmp_path,
                                    callbacks=[every_four])
    interrupted.fit(kit.TinyRegression(), kit.random_loader(batches=8))  # rows at steps 0..5, checkpoint at 4

    resumed = kit.quiet_trainer(logger="tensorboard", max_epochs=1, default_root_dir=tmp_path,
                                enable_checkpointing=False)
    resumed.fit(kit.TinyRegression(), kit.random_loader(batches=8), ckpt_path=checkpoints / "step=4.ckpt")

    assert resumed.logger.version == 0
    assert os.listdir(tmp_path / "lightning_logs") == ["version_0"]
    assert len(event_files(resumed.logger.log_dir)) == 1
    assert scalar_steps(read_events(resumed.logger.log_dir), "loss_step") == list(range(8))
    assert [(step, name) for step, name, _ in resumed.logger.read_back() if name == "loss_step"] == [
        (step, "loss_step") for step in range(8)
    ]


def test_a_validation_logged_at_the_checkpoint_step_after_the_checkpoint_is_in_the_events_once(tmp_path, kit):
    """The checkpoint after the 4th optimizer step is written before that batch's row and its validation are
    logged, at step 3: the resumed run logs both again, and the file is cut back to the checkpoint's events."""
    def validation_step(self, batch, batch_idx):
        inputs, targets = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(inputs), targets))

    module = type("WithValidation", (kit.TinyRegression,), {"validation_step": validation_step})()
    every_four = ModelCheckpoint(dirpath=tmp_path / "checkpoints", every_n_train_steps=4, save_top_k=-1,
                                 filename="{step}")
    flags = {"logger": "tensorboard", "default_root_dir": tmp_path, "val_check_interval": 4, "num_sanity_val_steps": 0}
    kit.quiet_trainer(max_steps=6, callbacks=[every_four], **flags).fit(
        module, kit.random_loader(batches=8), kit.random_loader(batches=2))
    resumed = kit.quiet_trainer(max_steps=8, enable_checkpointing=False, **flags)
    resumed.fit(module, kit.random_loader(batches=8), kit.random_loader(batches=2),
                ckpt_path=tmp_path / "checkpoints" / "step=4.ckpt")

    events = read_events(resumed.logger.log_dir)
    assert scalar_steps(events, "val_loss") == [3, 7]
    assert scalar_steps(events, "loss_step") == list(range(8))


def test_a_restart_after_a_kill_before_the_first_checkpoint_writes_each_step_once(tmp_path, kit):
    kit.run_killed(tmp_path, "tensorboard", kill_at=3)  # in on_train_batch_end of the 3rd batch, before its row
    killed_dir = tmp_path / "lightning_logs" / "version_0"
    assert scalar_steps(read_events(str(killed_dir)), "loss_step") == [0, 1]

    with pytest.warns(UserWarning, match="killed before its first checkpoint"):
        restarted = kit.quiet_trainer(logger="tensorboard", max_steps=8, default_root_dir=tmp_path,
                                      enable_checkpointing=False)
        restarted.fit(kit.TinyRegression(), kit.random_loader())

    assert restarted.logger.log_dir == str(killed_dir)
    assert len(event_files(killed_dir)) == 1
    assert scalar_steps(read_events(str(killed_dir)), "loss_step") == list(range(8))


def test_tensorboard_server_serves_a_logged_scalar(tmp_path, kit):
    logger = TensorBoardLogger(save_dir=tmp_path)
    for step in range(1, 4):
        logger.log_metrics({"loss": 1.0 / step, "epoch": 0.0}, step=step)
    logger.finalize("success")

    port = kit.free_port()
    executable = shutil.which("tensorboard", path=os.path.dirname(sys.executable)) or "tensorboard"
    server = subprocess.Popen(
        [executable, "--logdir", str(tmp_path / "lightning_logs"), "--host", "127.0.0.1", "--port", str(port),
         "--load_fast", "false", "--reload_interval", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?run=version_0&tag=loss"
    try:
        kit.wait_until(lambda: kit.http_ok(url), server, timeout=60, what="tensorboard")
        with urllib.request.urlopen(url, timeout=5) as response:
            points = json.load(response)
    finally:
        kit.stop(server)
    assert [(step, value) for _, step, value in points] == [
        (1, pytest.approx(1.0)), (2, pytest.approx(0.5)), (3, pytest.approx(1 / 3)),
    ]


def test_a_disk_full_from_the_start_warns_once_trains_on_and_writes_everything_once_there_is_room(small_disk):
    outcome = small_disk.fit("tensorboard", free_at=6)

    assert outcome["global_step"] == 10
    failures = [message for message in outcome["warnings"] if "Training goes on" in message]
    assert len(failures) == 1, outcome["warnings"]
    assert small_disk.mode == "RLIMIT_FSIZE" or "No space left on device" in failures[0]
    assert [step for step, name, _ in outcome["points"] if name == "loss"] == list(range(10))


def test_a_disk_that_stays_full_says_exactly_which_events_were_lost_and_fit_still_succeeds(small_disk):
    outcome = small_disk.fit("tensorboard", free_at=-1)

    assert outcome["global_step"] == 10
    lost = [message for message in outcome["warnings"] if "lost" in message]
    assert len(lost) == 1, outcome["warnings"]
    assert "10 metric row(s) for steps 0..9 (epoch, loss)" in lost[0]
    assert "3 hparams item(s)" in lost[0]  # session start, experiment, session end
    assert outcome["points"] == []


def test_chosen_by_name_imports_no_tensorboard_until_used(tmp_path):
    code = (
        "import sys, trellis; t = trellis.Trainer(logger='tensorboard', enable_progress_bar=False, "
        f"default_root_dir={str(tmp_path)!r}); print('torch.utils.tensorboard' in sys.modules, type(t.logger).__name__)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "TensorBoardLogger"]



def test_the_hyperparameters_are_also_written_to_hparams_yaml_as_lightning_does(tmp_path):
    import yaml

    logger = TensorBoardLogger(save_dir=tmp_path)
    logger.log_hyperparams({"lr": 0.1, "layers": [2, 3]})
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.finalize("success")
    assert yaml.safe_load((tmp_path / logger.run_name / "version_0" / "hparams.yaml").read_text()) == {
        "lr": 0.1, "layers": [2, 3]}

    without = TensorBoardLogger(save_dir=tmp_path, name="plain")
    without.log_metrics({"loss": 1.0}, step=0)
    without.finalize("success")
    assert yaml.safe_load((tmp_path / "plain" / "version_0" / "hparams.yaml").read_text()) == {}
