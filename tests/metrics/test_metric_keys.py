"""The keys and values self.log gives callback_metrics, logged_metrics, the progress bar and the loggers."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import trellis
from support import quiet_trainer
from trellis.errors import ConfigurationError

SIZES = [4, 4, 2]  # 10 samples in batches of 4: the epoch mean must weigh the last batch by 2


def data(samples: int = 10, batch_size: int = 4, seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, 3, generator=generator)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=batch_size)


def weighted_mean(values: list[torch.Tensor], sizes: list[int]) -> torch.Tensor:
    return sum(value * size for value, size in zip(values, sizes)) / sum(sizes)


class Logging(trellis.Module):
    """Logs its training loss in each on_step/on_epoch combination and keeps the values it logged."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.train_losses: list[torch.Tensor] = []
        self.val_losses: list[torch.Tensor] = []
        self.seen_in_batch_end: list[dict[str, float]] = []

    def training_step(self, batch, batch_idx):
        loss = torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])
        self.train_losses.append(loss.detach().clone())
        self.log("default", loss)
        self.log("step_only", loss, on_step=True, on_epoch=False, prog_bar=True)
        self.log("epoch_only", loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("both", loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log("hidden", loss, logger=False)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.seen_in_batch_end.append({name: float(value) for name, value in self.trainer.callback_metrics.items()})

    def validation_step(self, batch, batch_idx):
        loss = torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])
        self.val_losses.append(loss.detach().clone())
        self.log("val_loss", loss, prog_bar=True)
        self.log("val_both", loss, on_step=True, on_epoch=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_training_keys_and_values_as_lightning_names_them(recording_logger):
    module = Logging()
    trainer = quiet_trainer(max_epochs=1, logger=recording_logger, log_every_n_steps=1, num_sanity_val_steps=0,
                            limit_val_batches=0)
    trainer.fit(module, data())
    last, mean = module.train_losses[-1], weighted_mean(module.train_losses, SIZES)

    assert set(trainer.logged_metrics) == {"default", "step_only", "epoch_only", "both_step", "both_epoch"}
    assert set(trainer.callback_metrics) == {"default", "step_only", "epoch_only", "both", "both_step", "both_epoch",
                                             "hidden"}
    assert set(trainer.progress_bar_metrics) == {"step_only", "epoch_only", "both_step", "both_epoch"}
    callback = trainer.callback_metrics
    assert torch.equal(callback["both"], callback["both_epoch"])  # the bare name holds the epoch value at the end
    assert callback["both_step"].item() == pytest.approx(last.item())
    assert callback["both_epoch"].item() == pytest.approx(mean.item())
    assert callback["epoch_only"].item() == pytest.approx(mean.item())
    assert callback["default"].item() == callback["hidden"].item() == pytest.approx(last.item())
    assert all(isinstance(value, torch.Tensor) for value in trainer.logged_metrics.values())
    assert all(isinstance(value, float) for value in trainer.progress_bar_metrics.values())
    assert trainer.progress_bar_metrics["both_epoch"] == pytest.approx(mean.item())


def test_during_the_epoch_callbacks_see_step_values_under_the_bare_name_too():
    module = Logging()
    quiet_trainer(max_epochs=1, limit_val_batches=0).fit(module, data())
    for seen, loss in zip(module.seen_in_batch_end, module.train_losses):
        assert set(seen) == {"default", "step_only", "both", "both_step", "hidden"}  # no epoch values yet
        assert seen["both"] == seen["both_step"] == pytest.approx(loss.item())


def test_logger_rows_carry_the_epoch_and_logged_metrics_does_not(recording_logger):
    module = Logging()
    trainer = quiet_trainer(max_epochs=2, logger=recording_logger, log_every_n_steps=1, limit_val_batches=0)
    trainer.fit(module, data())
    step_rows = recording_logger.rows_with("both_step")
    assert [(step, row["epoch"]) for step, row in step_rows] == [(0, 0), (1, 0), (2, 0), (3, 1), (4, 1), (5, 1)]
    assert [row["both_step"] for _, row in step_rows] == pytest.approx([loss.item() for loss in module.train_losses])
    epoch_rows = recording_logger.rows_with("both_epoch")
    assert [(step, row["epoch"]) for step, row in epoch_rows] == [(2, 0), (5, 1)]  # at the epoch's last step
    assert set(epoch_rows[0][1]) == {"both_epoch", "epoch_only", "epoch"}
    assert "epoch" not in trainer.logged_metrics and "hidden" not in trainer.logged_metrics


def test_log_every_n_steps_picks_the_rows_and_a_value_not_logged_again_keeps_its_last_value(recording_logger):
    class Sparse(Logging):
        def training_step(self, batch, batch_idx):
            if batch_idx == 0:
                self.log("first_only", float(batch_idx + 7))
            return super().training_step(batch, batch_idx)

    trainer = quiet_trainer(max_epochs=1, logger=recording_logger, log_every_n_steps=2, limit_val_batches=0)
    trainer.fit(Sparse(), data(samples=16))
    rows = [(step, row.get("first_only")) for step, row in recording_logger.rows if "both_step" in row]
    assert rows == [(1, 7.0), (3, 7.0)]  # Lightning logs a value's latest step value until the epoch ends


def test_log_every_n_steps_zero_sends_epoch_rows_only_and_a_negative_one_is_refused(recording_logger):
    trainer = quiet_trainer(max_epochs=2, logger=recording_logger, log_every_n_steps=0, limit_val_batches=0,
                            callbacks=[trellis.callbacks.LearningRateMonitor()])
    trainer.fit(Logging(), data())
    rows = recording_logger.rows
    assert not [row for _, row in rows if "both_step" in row]
    assert [(step, row["epoch"]) for step, row in rows if "epoch_only" in row] == [(2, 0), (5, 1)]
    assert [step for step, row in rows if "lr-SGD" in row] == [0, 3]  # the monitor's epoch-start rows only
    with pytest.raises(ConfigurationError, match="log_every_n_steps=-1: pass 1 or more"):
        quiet_trainer(log_every_n_steps=-1)


def test_evaluation_values_reach_callbacks_once_reduced_and_steps_go_to_the_loggers(recording_logger):
    class SeesValidation(trellis.Callback):
        def __init__(self) -> None:
            self.during: list[set[str]] = []

        def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
            self.during.append(set(trainer.callback_metrics))

    module, seen = Logging(), SeesValidation()
    trainer = quiet_trainer(max_epochs=2, logger=recording_logger, log_every_n_steps=1, callbacks=[seen],
                            num_sanity_val_steps=0)
    trainer.fit(module, data(), data(samples=8, seed=1))
    first_validation = seen.during[:2]  # later ones still see the values of the validation before
    assert all(not keys & {"val_loss", "val_both", "val_both_step"} for keys in first_validation)
    second_epoch = module.val_losses[2:]
    assert trainer.callback_metrics["val_loss"].item() == pytest.approx(weighted_mean(second_epoch, [4, 4]).item())
    assert torch.equal(trainer.callback_metrics["val_both"], trainer.callback_metrics["val_both_epoch"])
    assert "val_both_step" not in trainer.callback_metrics
    # step rows of evaluation: the evaluation batches seen so far in this fit, and no epoch
    step_rows = recording_logger.rows_with("val_both_step")
    assert [step for step, _ in step_rows] == [0, 1, 2, 3] and all("epoch" not in row for _, row in step_rows)
    epoch_rows = recording_logger.rows_with("val_loss")
    assert [(step, row["epoch"]) for step, row in epoch_rows] == [(2, 0), (5, 1)]
    assert set(epoch_rows[0][1]) == {"val_loss", "val_both_epoch", "epoch"}

    recording_logger.rows.clear()
    trainer.validate(module, data(samples=8, seed=1))
    assert [step for step, _ in recording_logger.rows_with("val_both_step")] == [0, 1]  # counted anew


def test_several_loaders_get_suffixes_and_their_own_results():
    class TwoLoaders(trellis.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(3, 1)
            self.losses: dict[int, list[torch.Tensor]] = {0: [], 1: []}

        def test_step(self, batch, batch_idx, dataloader_idx=0):
            loss = torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])
            self.losses[dataloader_idx].append(loss)
            self.log("loss", loss)
            self.log(f"named_{dataloader_idx}", loss, add_dataloader_idx=False)

        def on_test_epoch_end(self):
            self.log("shared", 1.5)

    module = TwoLoaders()
    results = quiet_trainer().test(module, [data(samples=8, seed=1), data(samples=12, seed=2)], verbose=False)
    first, second = (weighted_mean(module.losses[0], [4, 4]).item(), weighted_mean(module.losses[1], [4, 4, 4]).item())
    assert results == [
        {"loss/dataloader_idx_0": pytest.approx(first), "named_0": pytest.approx(first), "shared": 1.5},
        {"loss/dataloader_idx_1": pytest.approx(second), "named_1": pytest.approx(second), "shared": 1.5},
    ]


def test_a_name_with_a_loader_suffix_is_refused_while_suffixes_are_added():
    class Suffixed(Logging):
        def training_step(self, batch, batch_idx):
            self.log("x/dataloader_idx_0", 1.0)

    with pytest.raises(trellis.errors.ConfigurationError, match="add_dataloader_idx=False"):
        quiet_trainer(max_steps=1).fit(Suffixed(), data())


def test_logging_a_name_twice_in_a_hook_with_other_arguments_is_refused():
    class Twice(Logging):
        def training_step(self, batch, batch_idx):
            self.log("x", 1.0, prog_bar=batch_idx == 1)
            return super().training_step(batch, batch_idx)

    with pytest.raises(trellis.errors.ConfigurationError, match="twice in training_step with different arguments"):
        quiet_trainer(max_steps=2).fit(Twice(), data())
