"""LearningRateMonitor in real fits: Lightning's names, the rows it writes straight to the loggers (CSV file read
back), callback_metrics, lrs and the last momentum / weight-decay values."""

from __future__ import annotations

import csv
import os

import pytest
import torch

import trellis
from support import TinyRegressor, loader, quiet_trainer
from trellis.callbacks import BackboneFinetuning, LearningRateMonitor
from trellis.errors import ConfigurationError


class ScheduledRegressor(TinyRegressor):
    """SGD with momentum, two param groups, and a StepLR that halves the rate every epoch."""

    def configure_optimizers(self):
        first, second = self.net[0], self.net[2]
        optimizer = torch.optim.SGD([{"params": first.parameters()}, {"params": second.parameters(), "lr": 0.01}],
                                    lr=0.1, momentum=0.9, weight_decay=1e-4)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)]


def read_rows(trainer: trellis.Trainer) -> list[dict[str, str]]:
    with open(os.path.join(trainer.log_dir, "metrics.csv"), newline="") as file:
        return list(csv.DictReader(file))


def logged(rows: list[dict[str, str]], name: str) -> list[tuple[int, float]]:
    """(step, value) of every row holding `name`."""
    return [(int(row["step"]), float(row[name])) for row in rows if row.get(name)]


def test_epoch_scheduler_rates_are_logged_at_each_epoch_start_per_param_group(tmp_path):
    monitor = LearningRateMonitor(log_momentum=True, log_weight_decay=True)
    trainer = quiet_trainer(logger="csv", default_root_dir=tmp_path, max_epochs=3, callbacks=[monitor])
    trainer.fit(ScheduledRegressor(), loader(64))  # 2 optimizer steps per epoch
    rows = read_rows(trainer)
    assert logged(rows, "lr-SGD/pg1") == [(0, 0.1), (2, 0.05), (4, 0.025)]
    assert logged(rows, "lr-SGD/pg2") == [(0, 0.01), (2, 0.005), (4, 0.0025)]
    assert [value for _, value in logged(rows, "lr-SGD/pg1-momentum")] == [0.9] * 3
    assert monitor.lrs == {"lr-SGD/pg1": [0.1, 0.05, 0.025], "lr-SGD/pg2": [0.01, 0.005, 0.0025]}
    assert monitor.last_momentum_values == {"lr-SGD/pg1-momentum": 0.9, "lr-SGD/pg2-momentum": 0.9}
    assert monitor.last_weight_decay_values == {"lr-SGD/pg1-weight_decay": 1e-4, "lr-SGD/pg2-weight_decay": 1e-4}
    # the rates reach callback_metrics (Lightning's), not logged_metrics: they go to the loggers directly
    assert float(trainer.callback_metrics["lr-SGD/pg1"]) == pytest.approx(0.025)
    assert "lr-SGD/pg1" not in trainer.logged_metrics


def test_step_interval_logs_before_the_batches_the_loggers_log(tmp_path):
    monitor = LearningRateMonitor(logging_interval="step")
    trainer = quiet_trainer(logger="csv", default_root_dir=tmp_path, max_epochs=1, log_every_n_steps=2,
                            callbacks=[monitor])
    trainer.fit(TinyRegressor(lr=0.05), loader(256, batch_size=32))  # 8 optimizer steps
    rows = read_rows(trainer)
    assert logged(rows, "lr-SGD") == [(1, 0.05), (3, 0.05), (5, 0.05), (7, 0.05)]
    assert [step for step, _ in logged(rows, "train_loss")] == [1, 3, 5, 7]  # the same steps as self.log's rows


def test_an_optimizer_without_scheduler_is_logged_at_both_intervals(tmp_path):
    monitor = LearningRateMonitor()
    trainer = quiet_trainer(logger="csv", default_root_dir=tmp_path, max_epochs=1, log_every_n_steps=4,
                            callbacks=[monitor])
    trainer.fit(TinyRegressor(lr=0.05), loader(256, batch_size=32))
    assert [step for step, _ in logged(read_rows(trainer), "lr-SGD")] == [0, 3, 7]  # epoch start, steps 3 and 7


def test_repeated_optimizers_are_numbered_and_named_schedulers_keep_their_name():
    class ThreeOptimizers(TinyRegressor):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            for optimizer in self.optimizers():
                optimizer.zero_grad()
                self.manual_backward(torch.nn.functional.mse_loss(self.net(batch[0]), batch[1]))
                optimizer.step()

        def configure_optimizers(self):
            first = torch.optim.Adam(self.net[0].parameters(), lr=1e-3)
            second = torch.optim.Adam(self.net[2].parameters(), lr=2e-3, betas=(0.5, 0.999))
            third = torch.optim.SGD([{"params": self.net[0].parameters(), "name": "encoder"}], lr=0.3)
            schedule = {"scheduler": torch.optim.lr_scheduler.StepLR(third, 1), "name": "my-schedule"}
            return [first, second, third], [schedule]

    monitor = LearningRateMonitor(logging_interval="epoch", log_momentum=True)
    trainer = quiet_trainer(logger=True, max_epochs=1, callbacks=[monitor])
    trainer.fit(ThreeOptimizers(), loader(32))
    assert monitor.lrs == {"my-schedule/encoder": [0.3], "lr-Adam": [1e-3], "lr-Adam-1": [2e-3]}
    assert monitor.last_momentum_values["lr-Adam-1-momentum"] == 0.5  # beta1 for Adam-style optimizers


def test_unfrozen_param_groups_rename_the_first_group():
    class WithBackbone(TinyRegressor):
        def __init__(self):
            super().__init__()
            self.backbone = torch.nn.Linear(8, 8)

        def training_step(self, batch, batch_idx):
            return torch.nn.functional.mse_loss(self.net(self.backbone(batch[0])), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.1)

    monitor = LearningRateMonitor(logging_interval="epoch")
    finetuning = BackboneFinetuning(unfreeze_backbone_at_epoch=1)
    trainer = quiet_trainer(logger=True, max_epochs=3, callbacks=[finetuning, monitor])
    trainer.fit(WithBackbone(), loader(32))
    assert monitor.lrs == {"lr-SGD/pg1": [0.1, 0.1, 0.1], "lr-SGD/pg2": pytest.approx([0.1 * 0.1, 0.1 * 0.1 * 2])}


def test_log_key_prefix_is_prepended(tmp_path):
    monitor = LearningRateMonitor(logging_interval="epoch", log_key_prefix="optim/")
    trainer = quiet_trainer(logger="csv", default_root_dir=tmp_path, max_epochs=1, callbacks=[monitor])
    trainer.fit(TinyRegressor(lr=0.05), loader(32))
    assert logged(read_rows(trainer), "optim/lr-SGD") == [(0, 0.05)]


def test_duplicate_param_group_names_are_refused():
    class SameNames(TinyRegressor):
        def configure_optimizers(self):
            return torch.optim.SGD([{"params": self.net[0].parameters(), "name": "a"},
                                    {"params": self.net[2].parameters(), "name": "a"}], lr=0.1)

    trainer = quiet_trainer(logger=True, max_epochs=1, callbacks=[LearningRateMonitor()])
    with pytest.raises(ConfigurationError, match="duplicated parameter group names"):
        trainer.fit(SameNames(), loader(32))


def test_without_a_logger_says_how_to_fix_it():
    trainer = quiet_trainer(max_epochs=1, callbacks=[LearningRateMonitor()])
    with pytest.raises(ConfigurationError, match="has no logger: pass logger=True"):
        trainer.fit(TinyRegressor(), loader(32))


def test_an_unknown_interval_is_refused():
    with pytest.raises(ConfigurationError, match="`step` or `epoch` or `None`"):
        LearningRateMonitor(logging_interval="batch")
