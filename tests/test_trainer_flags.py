"""Trainer flags beyond the basics, and the classic spellings still found in Lightning code."""

from __future__ import annotations

import pytest
import torch

import trellis
from support import TinyRegressor, loader, quiet_trainer
from trellis.callbacks import ModelSummary, ProgressBar


def test_classic_flags_work_with_a_warning_naming_the_modern_spelling(tmp_path):
    with pytest.warns(DeprecationWarning, match="use accelerator='cpu'"):
        trainer = trellis.Trainer(gpus=0, logger=False)
    assert type(trainer.accelerator).__name__ == "CPUAccelerator"
    with pytest.warns(DeprecationWarning, match="strategy='single_device'"):
        trellis.Trainer(distributed_backend="single_device", logger=False)
    with pytest.warns(DeprecationWarning, match=r"ProgressBar\(refresh_rate=5\)"):
        trainer = trellis.Trainer(progress_bar_refresh_rate=5, logger=False)
    assert [c.refresh_rate for c in trainer.callbacks if isinstance(c, ProgressBar)] == [5]
    with pytest.warns(DeprecationWarning, match="enable_model_summary=False"):
        trainer = trellis.Trainer(weights_summary=None, logger=False)
    assert not any(isinstance(c, ModelSummary) for c in trainer.callbacks)

    first = quiet_trainer(max_epochs=1)
    first.fit(TinyRegressor(), loader())
    first.save_checkpoint(tmp_path / "one.ckpt")
    with pytest.warns(DeprecationWarning, match="ckpt_path"):
        resumed = quiet_trainer(max_epochs=2, resume_from_checkpoint=str(tmp_path / "one.ckpt"))
    resumed.fit(TinyRegressor(), loader())
    assert resumed.global_step == 16


def test_classic_tpu_cores_maps_to_the_xla_accelerator():
    with (pytest.warns(DeprecationWarning, match="accelerator='tpu', devices=8"),
          pytest.raises(trellis.errors.TrellisError)):
        trellis.Trainer(tpu_cores=8, logger=False)  # no TPU here: the xla plugin refuses with what is missing


def test_fast_dev_run_runs_one_batch_of_each_and_writes_nothing(tmp_path):
    trainer = trellis.Trainer(fast_dev_run=True, default_root_dir=tmp_path, enable_progress_bar=False,
                              enable_model_summary=False)
    trainer.fit(TinyRegressor(), loader(), loader(64))
    assert trainer.global_step == 1
    assert list(tmp_path.iterdir()) == []


def test_overfit_batches_trains_on_the_same_first_batches_every_epoch():
    seen: list[list[float]] = []

    class Records(TinyRegressor):
        def training_step(self, batch, batch_idx):
            seen.append(batch[0][:, 0].tolist())
            return super().training_step(batch, batch_idx)

    quiet_trainer(max_epochs=2, overfit_batches=2).fit(Records(), loader(shuffle=True))
    assert len(seen) == 4 and seen[:2] == seen[2:]
    assert seen[0] == next(iter(loader()))[0][:, 0].tolist()  # in order, not shuffled


def test_reload_dataloaders_every_n_epochs_requests_new_loaders():
    requests = []

    class Reloads(TinyRegressor):
        def train_dataloader(self):
            requests.append(self.current_epoch)
            return loader(64)

    quiet_trainer(max_epochs=4, reload_dataloaders_every_n_epochs=2).fit(Reloads())
    assert requests == [0, 2]


def test_simple_profiler_reports_hooks_and_steps(tmp_path, capsys):
    trainer = quiet_trainer(max_epochs=1, profiler="simple", default_root_dir=tmp_path,
                            callbacks=[trellis.callbacks.EarlyStopping(monitor="val_loss")])
    trainer.fit(TinyRegressor(), loader(), loader(64))
    report = (tmp_path / "profile-simple.txt").read_text()
    assert "training step (forward, backward, optimizer)" in report and "hook on_validation_end" in report
    assert "simple profiler report" in capsys.readouterr().out


def test_pytorch_profiler_writes_a_chrome_trace(tmp_path):
    quiet_trainer(max_epochs=1, profiler="pytorch", default_root_dir=tmp_path).fit(TinyRegressor(), loader())
    assert (tmp_path / "trace.json").stat().st_size > 0
    assert "Self CPU" in (tmp_path / "profile-pytorch.txt").read_text()


@pytest.mark.filterwarnings("ignore:Error detected in:UserWarning")
def test_detect_anomaly_names_the_backward_op_that_made_nan():
    class MakesNan(TinyRegressor):
        def training_step(self, batch, batch_idx):
            return torch.sqrt(-super().training_step(batch, batch_idx) - 1)

    with pytest.raises(RuntimeError, match="SqrtBackward"):
        quiet_trainer(max_steps=1, detect_anomaly=True).fit(MakesNan(), loader())


def test_deterministic_flag_switches_torch_to_deterministic_algorithms():
    previous = torch.are_deterministic_algorithms_enabled()
    try:
        quiet_trainer(deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(previous)


def test_argparse_round_trip():
    import argparse

    parser = trellis.Trainer.add_argparse_args(argparse.ArgumentParser())
    args = parser.parse_args(["--max_epochs", "3", "--logger", "false"])
    trainer = trellis.Trainer.from_argparse_args(args, enable_progress_bar=False)
    assert trainer.max_epochs == 3 and trainer.loggers == []


def test_callbacks_loggers_and_plugins_come_in_any_sequence_as_hydra_passes_them(tmp_path):
    from collections.abc import Sequence

    from trellis_csv import CSVLogger

    class ConfigList(Sequence):  # what hydra.utils.instantiate hands over for a list: a ListConfig, not a list
        def __init__(self, *items) -> None:
            self.items = items

        def __getitem__(self, index):
            return self.items[index]

        def __len__(self) -> int:
            return len(self.items)

    class Counts(trellis.Callback):
        batches = 0

        def on_train_batch_end(self, *args) -> None:
            self.batches += 1

    counts, logger = Counts(), CSVLogger(tmp_path)
    trainer = trellis.Trainer(callbacks=ConfigList(counts), logger=ConfigList(logger), plugins=ConfigList(),
                              max_epochs=1, enable_progress_bar=False, enable_model_summary=False,
                              enable_checkpointing=False)
    trainer.fit(TinyRegressor(), loader())
    assert counts.batches == 8 and trainer.loggers == [logger]
