"""torchmetrics objects logged with self.log and self.log_dict, checked against torchmetrics run directly."""

from __future__ import annotations

import json

import pytest
import torch
import torchmetrics
from torch.utils.data import DataLoader, TensorDataset

import trellis
from support import quiet_trainer, run_python
from trellis.errors import ConfigurationError


def classification(samples: int, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, 4, generator=generator)
    return DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=8)


class Classifier(trellis.Module):
    """Logs accuracies as metric objects and keeps every batch's predictions to check them against."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 3)
        self.train_acc = torchmetrics.Accuracy(task="multiclass", num_classes=3)
        self.val_acc = torchmetrics.Accuracy(task="multiclass", num_classes=3)
        self.val_metrics = torchmetrics.MetricCollection(
            {"acc": torchmetrics.Accuracy(task="multiclass", num_classes=3),
             "f1": torchmetrics.F1Score(task="multiclass", num_classes=3, average="macro")}, prefix="v_")
        self.train_batches: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
        self.val_batches: list[tuple[torch.Tensor, torch.Tensor]] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.layer(x)
        if batch_idx == 0:
            self.train_batches.append([])
        self.train_batches[-1].append((logits.detach(), y))
        self.train_acc(logits, y)
        self.log("train_acc", self.train_acc, on_step=True, on_epoch=True)
        return torch.nn.functional.cross_entropy(logits, y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.layer(x)
        self.val_batches.append((logits, y))
        self.val_acc.update(logits, y)
        self.log("val_acc", self.val_acc)
        self.val_metrics.update(logits, y)
        self.log_dict(self.val_metrics)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def accuracy(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    metric = torchmetrics.Accuracy(task="multiclass", num_classes=3)
    for logits, target in batches:
        metric.update(logits, target)
    return metric.compute().item()


def test_a_metric_gives_its_forward_value_per_step_and_its_epoch_value_then_resets(recording_logger):
    module = Classifier()
    trainer = quiet_trainer(max_epochs=2, logger=recording_logger, log_every_n_steps=1, limit_val_batches=0)
    trainer.fit(module, classification(32, 0))

    step_values = [row["train_acc_step"] for _, row in recording_logger.rows_with("train_acc_step")]
    every_batch = [batch for epoch in module.train_batches for batch in epoch]
    assert step_values == pytest.approx([accuracy([batch]) for batch in every_batch])
    epoch_values = [row["train_acc_epoch"] for _, row in recording_logger.rows_with("train_acc_epoch")]
    assert epoch_values == pytest.approx([accuracy(epoch) for epoch in module.train_batches])  # reset between
    assert trainer.callback_metrics["train_acc"].item() == pytest.approx(epoch_values[-1])
    assert module.train_acc.update_count == 0  # reset after its epoch value was taken


def test_updated_metrics_and_collections_give_epoch_values_in_evaluation():
    module = Classifier()
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=0)
    (results,) = trainer.validate(module, classification(40, 1), verbose=False)
    f1 = torchmetrics.F1Score(task="multiclass", num_classes=3, average="macro")
    for logits, target in module.val_batches:
        f1.update(logits, target)
    assert results == {"val_acc": pytest.approx(accuracy(module.val_batches)),
                       "v_acc": pytest.approx(accuracy(module.val_batches)), "v_f1": pytest.approx(f1.compute().item())}
    assert set(trainer.callback_metrics) == {"val_acc", "v_acc", "v_f1"}
    assert module.val_acc.update_count == 0 and module.val_metrics["acc"].update_count == 0


def test_a_metric_that_is_not_an_attribute_of_the_module_is_refused():
    class Detached(Classifier):
        def training_step(self, batch, batch_idx):
            metric = torchmetrics.MeanMetric()
            metric.update(1.0)
            self.log("mean", metric)
            return super().training_step(batch, batch_idx)

    with pytest.raises(ConfigurationError, match="not an attribute of Detached"):
        quiet_trainer(max_steps=1).fit(Detached(), classification(8, 0))


def test_the_same_name_for_two_metrics_in_one_hook_is_refused():
    class Clash(Classifier):
        def validation_step(self, batch, batch_idx):
            super().validation_step(batch, batch_idx)
            self.log("v_acc", self.val_acc)

    with pytest.raises(ConfigurationError, match="metric_attribute: 'val_metrics.acc', then 'val_acc'"):
        quiet_trainer(max_epochs=1).validate(Clash(), classification(8, 0))


@pytest.mark.parametrize("named", [False, True])
def test_metric_attribute_names_a_metric_the_module_does_not_hold_as_a_submodule(named):
    class PlainDict(Classifier):
        def __init__(self) -> None:
            super().__init__()
            self.plain = {"mean": torchmetrics.MeanMetric()}  # not registered as a submodule

        def training_step(self, batch, batch_idx):
            self.plain["mean"](float(batch_idx))
            self.log("mean", self.plain["mean"], metric_attribute="plain" if named else None)
            return super().training_step(batch, batch_idx)

    trainer = quiet_trainer(max_steps=2)
    if not named:
        with pytest.raises(ConfigurationError, match="pass metric_attribute="):
            trainer.fit(PlainDict(), classification(16, 0))
        return
    trainer.fit(PlainDict(), classification(16, 0))
    assert trainer.callback_metrics["mean"].item() == 1.0  # the forward value of the last step


def test_trellis_does_not_import_torchmetrics_for_modules_that_do_not_use_it():
    result = run_python("""
        import json, sys
        import trellis
        from support import TinyRegressor, loader, quiet_trainer
        quiet_trainer(max_epochs=1).fit(TinyRegressor(), loader(64), loader(64))
        print(json.dumps("torchmetrics" in sys.modules))
    """, extra_path=__import__("pathlib").Path(__file__).parents[1])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) is False
