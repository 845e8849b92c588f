"""Epoch reductions: reduce_fx, batch-size weighting, value types, log_dict."""

from __future__ import annotations

import builtins

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import trellis
from support import quiet_trainer
from trellis.errors import ConfigurationError

BATCHES = 5


def batches(samples: int = 20, batch_size: int = 4) -> DataLoader:
    x = torch.arange(samples, dtype=torch.float32).unsqueeze(1)
    return DataLoader(TensorDataset(x, x), batch_size=batch_size)


class LogsBatchIndex(trellis.Module):
    """Logs `value(batch_idx)` as "x" on epoch only, with the given self.log arguments."""

    def __init__(self, value=float, **arguments) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.value, self.arguments = value, arguments

    def training_step(self, batch, batch_idx):
        self.log("x", self.value(batch_idx), on_step=False, on_epoch=True, **self.arguments)
        return self.layer(batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def epoch_value(module: trellis.Module, loader: DataLoader | None = None) -> float:
    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(module, loader or batches())
    return trainer.callback_metrics["x"].item()


indices = list(range(BATCHES))


@pytest.mark.parametrize(("reduce_fx", "expected"), [
    ("sum", sum(indices)), ("SUM", sum(indices)), (torch.sum, sum(indices)), (builtins.sum, sum(indices)),
    ("max", max(indices)), (torch.max, max(indices)), (builtins.max, max(indices)),
    ("min", min(indices)), (torch.min, min(indices)), (builtins.min, min(indices)),
    ("mean", sum(indices) / BATCHES), ("avg", sum(indices) / BATCHES), (torch.mean, sum(indices) / BATCHES),
])
def test_reduce_fx_by_name_or_function(reduce_fx, expected):
    assert epoch_value(LogsBatchIndex(reduce_fx=reduce_fx)) == pytest.approx(expected)


@pytest.mark.parametrize("reduce_fx", ["median", torch.median, lambda values: values.mean()])
def test_other_reductions_are_refused_with_the_torchmetrics_alternative(reduce_fx):
    with pytest.raises(ConfigurationError, match="torchmetrics.Metric"):
        epoch_value(LogsBatchIndex(reduce_fx=reduce_fx))


def test_the_mean_weighs_each_batch_by_its_inferred_size():
    loader = batches(samples=18, batch_size=4)  # sizes 4, 4, 4, 4, 2
    sizes = [4, 4, 4, 4, 2]
    expected = sum(index * size for index, size in zip(indices, sizes)) / sum(sizes)
    assert epoch_value(LogsBatchIndex(), loader) == pytest.approx(expected)


def test_an_explicit_batch_size_weighs_the_mean():
    class Weighted(LogsBatchIndex):
        def training_step(self, batch, batch_idx):
            self.log("x", float(batch_idx), on_step=False, on_epoch=True, batch_size=batch_idx + 1)
            return self.layer(batch[0]).sum()

    expected = sum(index * (index + 1) for index in indices) / sum(index + 1 for index in indices)
    assert epoch_value(Weighted()) == pytest.approx(expected)


def test_a_batch_without_tensors_needs_an_explicit_batch_size():
    class Strings(LogsBatchIndex):
        def training_step(self, batch, batch_idx):
            self.log("x", 1.0, on_step=False, on_epoch=True)
            return self.layer(torch.ones(1)).sum()

    with pytest.raises(ConfigurationError, match=r"batch_size=\.\.\."):
        epoch_value(Strings(), DataLoader(["a", "b", "c"], batch_size=2))


@pytest.mark.filterwarnings("ignore:self.log\\('x', ...\\) got a torch.int64 value:UserWarning")
@pytest.mark.parametrize(("value", "expected"), [
    (lambda index: index, 2.0),  # int
    (lambda index: torch.tensor(index), 2.0),  # int tensor: converted to float (with a warning)
    (lambda index: torch.tensor([[float(index)]]), 2.0),  # one element, any shape
    (lambda index: torch.tensor(float(index), dtype=torch.float16), 2.0),
    (lambda index: torch.tensor(float(index), dtype=torch.float64), 2.0),
    (lambda index: index % 2 == 0, 0.6),  # bool
])
def test_numbers_and_one_element_tensors_of_any_type_are_logged(value, expected):
    assert epoch_value(LogsBatchIndex(value=value)) == pytest.approx(expected)


@pytest.mark.parametrize(("value", "error", "message"), [
    (torch.ones(3), ValueError, "single element"),
    ("high", ValueError, "str values cannot be logged"),
    ({"a": 1.0}, ValueError, "self.log_dict"),
])
def test_values_that_cannot_be_logged_are_refused(value, error, message):
    with pytest.raises(error, match=message):
        epoch_value(LogsBatchIndex(value=lambda index: value))


def test_logged_tensors_are_detached():
    class KeepsGraph(LogsBatchIndex):
        def training_step(self, batch, batch_idx):
            output = self.layer(batch[0]).sum()
            self.log("x", output, on_step=True, on_epoch=True)
            return output

    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(KeepsGraph(), batches())
    assert not any(value.requires_grad for value in trainer.callback_metrics.values())


def test_log_dict_logs_each_item_with_the_same_arguments():
    class LogsDict(LogsBatchIndex):
        def training_step(self, batch, batch_idx):
            self.log_dict({"a": float(batch_idx), "b": 2.0 * batch_idx}, on_epoch=True, prog_bar=True)
            return self.layer(batch[0]).sum()

    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(LogsDict(), batches())
    assert set(trainer.progress_bar_metrics) == {"a_step", "a_epoch", "b_step", "b_epoch"}
    assert trainer.progress_bar_metrics["b_epoch"] == pytest.approx(2.0 * sum(indices) / BATCHES)
