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


def hparams_data(accumulator: EventAccumulator) -> dict[str, plugin_data_pb2.HParamsPluginData]:
    contents = accumulator.PluginTagToContent("hparams")
    return {tag: plugin_data_pb2.HParamsPluginData.FromString(content) for tag, content in contents.items()}


def test_fit_writes_every_step_epoch_aggregates_and_hparams_with_their_metrics(tmp_path, kit):
    trainer = kit.quiet_trainer(logger="tensorboard", max_epochs=2, default_root_dir=tmp_path)
    trainer.fit(kit.TinyRegression(learning_rate=0.05), kit.random_loader(batches=8))

    logger = trainer.logger
    assert isinstance(logger, TensorBoardLogger)
    assert logger.log_dir == os.path.join(tmp_path, "trellis_logs", "version_0")
    events = read_events(logger.log_dir)
    assert scalar_steps(events, "loss_step") == list(range(1, 17))
    assert scalar_steps(events, "loss_epoch") == [8, 16]
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
    interrupted = kit.quiet_trainer(logger="tensorboard", max_steps=6, default_root_dir=tmp_path, callbacks=[every_four])
    interrupted.fit(kit.TinyRegression(), kit.random_loader(batches=8))  # stops at step 6, past the step-4 checkpoint

    resumed = kit.quiet_trainer(logger="tensorboard", max_epochs=1, default_root_dir=tmp_path, enable_checkpointing=False)
    resumed.fit(kit.TinyRegression(), kit.random_loader(batches=8), ckpt_path=checkpoints / "step=4.ckpt")

    assert resumed.logger.version == 0
    assert os.listdir(tmp_path / "trellis_logs") == ["version_0"]
    assert scalar_steps(read_events(resumed.logger.log_dir), "loss_step") == list(range(1, 9))


def test_tensorboard_server_serves_a_logged_scalar(tmp_path, kit):
    logger = TensorBoardLogger(save_dir=tmp_path)
    for step in range(1, 4):
        logger.log_metrics({"loss": 1.0 / step, "epoch": 0.0}, step=step)
    logger.finalize("success")

    port = kit.free_port()
    executable = shutil.which("tensorboard", path=os.path.dirname(sys.executable)) or "tensorboard"
    server = subprocess.Popen(
        [executable, "--logdir", str(tmp_path / "trellis_logs"), "--host", "127.0.0.1", "--port", str(port),
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


def test_a_failing_writer_never_stops_training_and_delivers_what_it_kept(tmp_path, monkeypatch, kit):
    """Disk-full cannot be produced here on demand, so the writer is made to fail for a while (a fault injection)."""
    from torch.utils.tensorboard import SummaryWriter

    real_add_scalar = SummaryWriter.add_scalar
    disk = {"full": True}

    def add_scalar(self, *args, **kwargs):
        if disk["full"]:
            raise OSError(28, "No space left on device")
        return real_add_scalar(self, *args, **kwargs)

    monkeypatch.setattr(SummaryWriter, "add_scalar", add_scalar)
    logger = TensorBoardLogger(save_dir=tmp_path)
    with pytest.warns(UserWarning, match="No space left on device") as warned:
        for step in range(1, 6):
            logger.log_metrics({"loss": float(step)}, step=step)
    assert len(warned) == 1
    disk["full"] = False
    logger.log_metrics({"loss": 6.0}, step=6)
    logger.finalize("success")
    assert scalar_steps(read_events(logger.log_dir), "loss") == [1, 2, 3, 4, 5, 6]


def test_what_could_never_be_written_is_saved_and_named(tmp_path, monkeypatch):
    from torch.utils.tensorboard import SummaryWriter

    def add_scalar(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(SummaryWriter, "add_scalar", add_scalar)
    logger = TensorBoardLogger(save_dir=tmp_path)
    with pytest.warns(UserWarning) as warned:
        logger.log_metrics({"loss": 1.0}, step=1)
        logger.log_metrics({"loss": 2.0}, step=2)
        logger.finalize("failed")
    spilled = os.path.join(logger.log_dir, "undelivered.jsonl")
    assert any("steps 1..2" in str(warning.message) and spilled in str(warning.message) for warning in warned)
    with open(spilled) as file:
        assert [json.loads(line) for line in file] == [
            {"step": 1, "metrics": {"loss": 1.0}}, {"step": 2, "metrics": {"loss": 2.0}},
        ]


def test_chosen_by_name_imports_no_tensorboard_until_used(tmp_path):
    code = (
        "import sys, trellis; t = trellis.Trainer(logger='tensorboard', enable_progress_bar=False, "
        f"default_root_dir={str(tmp_path)!r}); print('torch.utils.tensorboard' in sys.modules, type(t.logger).__name__)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "TensorBoardLogger"]

