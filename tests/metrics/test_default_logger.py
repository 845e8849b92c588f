"""logger=True: TensorBoard where trellis-tensorboard (and tensorboard) is installed, else CSV."""

from __future__ import annotations

import importlib.util

import torch

import trellis
from support import TinyRegressor, loader
from trellis import discovery, selection
from trellis_csv import CSVLogger


def tensorboard_installed() -> bool:
    return "tensorboard" in discovery.names("logger") and importlib.util.find_spec("tensorboard") is not None


class DrawsImages(TinyRegressor):
    def training_step(self, batch, batch_idx):
        if batch_idx == 0:
            self.logger.experiment.add_image("sample", torch.rand(3, 4, 4), self.global_step)
        return super().training_step(batch, batch_idx)


def test_the_default_logger_is_tensorboard_when_installed_and_gan_code_can_draw_to_it(tmp_path):
    trainer = trellis.Trainer(max_epochs=1, default_root_dir=tmp_path, enable_progress_bar=False,
                              enable_model_summary=False, enable_checkpointing=False, log_every_n_steps=1)
    expected = "TensorBoardLogger" if tensorboard_installed() else "CSVLogger"
    assert type(trainer.logger).__name__ == expected
    assert trainer.logger.log_dir == str(tmp_path / CSVLogger().run_name / "version_0")  # the folder CSV uses
    if expected == "CSVLogger":
        return
    trainer.fit(DrawsImages(), loader(64))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(trainer.logger.log_dir, size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert events.Tags()["images"] == ["sample"]
    assert [event.step for event in events.Scalars("train_loss")] == [0, 1]


def test_without_tensorboard_the_default_is_the_dependency_free_csv_logger(tmp_path, monkeypatch):
    monkeypatch.setattr(selection, "PREFERRED_DEFAULT_LOGGER_PACKAGE", "a_package_that_is_not_installed")
    trainer = trellis.Trainer(default_root_dir=tmp_path, enable_progress_bar=False)
    assert isinstance(trainer.logger, CSVLogger)
    assert trainer.logger.log_dir == str(tmp_path / CSVLogger().run_name / "version_0")
