"""The MetricStore and its rules on their own: hook rules, reductions, batch sizes, reduction over processes,
and its checkpoint state."""

from __future__ import annotations

import dataclasses
import io
from types import SimpleNamespace

import pytest
import torch

from trellis.errors import ConfigurationError
from trellis.metrics import MetricStore
from trellis.metrics.hook_rules import resolve_levels
from trellis.metrics.values import batch_size_of, reduction_name
from trellis.stages import FIT


@pytest.mark.parametrize(("hook", "expected"), [
    ("training_step", (True, False)), ("on_train_batch_end", (True, False)), ("on_before_backward", (True, False)),
    ("validation_step", (False, True)), ("on_test_batch_start", (False, True)),
    ("on_train_epoch_end", (False, True)), ("on_validation_start", (False, True)),
])
def test_default_levels_by_hook(hook, expected):
    assert resolve_levels(hook, "x", None, None) == expected


@pytest.mark.parametrize("hook", ["setup", "on_fit_start", "predict_step", "on_save_checkpoint", "teardown",
                                  "lr_scheduler_step", "on_predict_batch_end", "not_a_hook"])
def test_hooks_without_a_step_or_epoch_refuse(hook):
    with pytest.raises(ConfigurationError, match=f"in {hook}, where logging is not supported"):
        resolve_levels(hook, "x", None, None)


def test_reduction_names():
    assert [reduction_name("x", fx) for fx in ("Mean", "avg", torch.sum, max, min)] == ["mean", "mean", "sum", "max",
                                                                                          "min"]


@dataclasses.dataclass
class Example:
    tokens: torch.Tensor
    label: str


@pytest.mark.filterwarnings("ignore:The batch size inferred from the batch is:UserWarning")
@pytest.mark.parametrize(("batch", "size"), [
    (torch.zeros(7, 3), 7), (torch.tensor(1.0), 1), ({"x": torch.zeros(5, 2), "y": torch.zeros(5)}, 5),
    ([["a", "b"], torch.zeros(3, 1)], 3), (Example(torch.zeros(6, 4), "text"), 6),
])
def test_batch_size_is_the_first_dimension_of_the_first_tensor(batch, size):
    assert batch_size_of(batch) == size


def test_an_ambiguous_batch_size_warns_and_uses_the_first():
    with pytest.warns(UserWarning, match="batch size inferred from the batch is 4"):
        assert batch_size_of((torch.zeros(4, 2), torch.zeros(9, 2))) == 4


def fake_run(world_size: int) -> SimpleNamespace:
    return SimpleNamespace(module=torch.nn.Linear(1, 1), loggers=[], strategy=SimpleNamespace(world_size=world_size),
                           entry=FIT)


class SummingReduce:
    """strategy.reduce over two processes holding the same values: records each call."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, value: torch.Tensor, op: str) -> torch.Tensor:
        self.calls.append(op)
        return value * 2 if op == "sum" else value


def log(store: MetricStore, name: str, value: float, **arguments) -> None:
    options = dict(prog_bar=False, logger=None, on_step=None, on_epoch=None, reduce_fx="mean", enable_graph=False,
                   sync_dist=False, sync_dist_group=None, add_dataloader_idx=True, batch_size=1,
                   metric_attribute=None, rank_zero_only=False)
    options.update(arguments)
    store.log(torch.nn.Linear(1, 1), name, value, *options.values())


def training_store(reduce, world_size: int) -> MetricStore:
    store = MetricStore(reduce)
    store.start(fake_run(world_size))
    store.fx, store.in_batches = "training_step", True
    return store


def test_sync_dist_reduces_step_values_and_epoch_values_over_processes():
    reduce = SummingReduce()
    store = training_store(reduce, world_size=2)
    for value in (1.0, 3.0):
        log(store, "loss", value, on_epoch=True, sync_dist=True, reduce_fx="sum")
    assert reduce.calls == ["sum", "sum"]  # each step value
    store.epoch_end_reached()
    assert store.callback_metrics["loss_epoch"].item() == 8.0  # (1 + 3) on each of two processes
    assert reduce.calls == ["sum", "sum", "sum"]


@pytest.mark.parametrize(("world_size", "rank_zero_only"), [(1, False), (2, True)])
def test_no_reduction_in_one_process_or_for_rank_zero_only_values(world_size, rank_zero_only):
    reduce = SummingReduce()
    store = training_store(reduce, world_size)
    log(store, "loss", 1.0, on_epoch=True, sync_dist=True, rank_zero_only=rank_zero_only)
    store.epoch_end_reached()
    assert store.callback_metrics["loss_epoch"].item() == 1.0
    assert reduce.calls == []


def test_a_process_group_cannot_be_chosen():
    store = training_store(SummingReduce(), world_size=2)
    with pytest.raises(ConfigurationError, match="sync_dist_group"):
        log(store, "loss", 1.0, sync_dist=True, sync_dist_group=object())


def test_the_state_loads_with_weights_only_and_continues_the_epoch():
    store = training_store(SummingReduce(), world_size=1)
    log(store, "loss", 1.0, on_epoch=True, batch_size=1)
    log(store, "loss", 2.0, on_epoch=True, batch_size=3)
    buffer = io.BytesIO()
    torch.save(store.state_dict(), buffer)
    buffer.seek(0)

    resumed = training_store(SummingReduce(), world_size=1)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.callback_metrics["loss_step"].item() == 2.0
    log(resumed, "loss", 3.0, on_epoch=True, batch_size=1)
    resumed.epoch_end_reached()
    assert resumed.callback_metrics["loss_epoch"].item() == pytest.approx((1.0 + 2.0 * 3 + 3.0) / 5)
