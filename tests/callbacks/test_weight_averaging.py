"""StochasticWeightAveraging and WeightAveraging/EMAWeightAveraging against plain PyTorch loops built on
torch.optim.swa_utils: the final weights, the learning rates, batch-norm statistics, checkpoints and resume."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.optim.swa_utils import SWALR, AveragedModel, get_ema_avg_fn

import trellis
from support import loader, quiet_trainer
from trellis.callbacks import EMAWeightAveraging, ModelCheckpoint, StochasticWeightAveraging, WeightAveraging
from trellis.errors import ConfigurationError


class Net(trellis.Module):
    def __init__(self, batch_norm: bool = False) -> None:
        super().__init__()
        middle = torch.nn.BatchNorm1d(16) if batch_norm else torch.nn.Identity()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), middle, torch.nn.Tanh(), torch.nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return torch.nn.functional.mse_loss(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", torch.nn.functional.mse_loss(self(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def assert_same_tensors(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    for name, tensor in first.items():
        torch.testing.assert_close(second[name], tensor, rtol=0, atol=0, msg=name)


def plain_swa(epochs: int, swa_start: int, swa_lr: float, batch_norm: bool) -> tuple[torch.nn.Module, list[float]]:
    """Lightning's SWA by hand: from epoch `swa_start` (zero-based) the average takes in the weights at each epoch's
    start and SWALR replaces the schedule; the module ends with the average (and, with batch norm, statistics
    recomputed over one more pass of the training data)."""
    torch.manual_seed(0)
    module = Net(batch_norm)
    average = copy.deepcopy(module)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    batches, averaged, scheduler, rates = list(loader(64)), 0, None, []
    for epoch in range(epochs):
        if epoch == swa_start:
            optimizer.param_groups[0]["initial_lr"] = swa_lr
            scheduler = SWALR(optimizer, swa_lr=[swa_lr], anneal_epochs=10, anneal_strategy="cos",
                              last_epoch=epochs + batch_norm)
        if epoch >= swa_start:
            for kept, current in zip(average.parameters(), module.parameters()):
                kept.detach().copy_(current if averaged == 0 else kept + (current - kept) / (averaged + 1))
            averaged += 1
        rates.append(optimizer.param_groups[0]["lr"])
        for x, y in batches:
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(module(x), y).backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
    for target, source in zip(module.parameters(), average.parameters()):
        target.detach().copy_(source)
    if batch_norm:
        norm = module.net[1]
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the pass
        with torch.no_grad():
            for x, _ in batches:
                module(x)
        norm.momentum = 0.1
    return module, rates


@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "batch-norm"])
def test_swa_ends_with_the_averaged_weights_of_a_plain_swa_loop(batch_norm):
    rates = []

    class RecordsRates(Net):
        def on_train_epoch_start(self):
            rates.append(self.trainer.optimizers[0].param_groups[0]["lr"])

    torch.manual_seed(0)
    module = RecordsRates(batch_norm)
    swa = StochasticWeightAveraging(swa_lrs=0.05, swa_epoch_start=3)
    trainer = quiet_trainer(max_epochs=5, callbacks=[swa])
    trainer.fit(module, loader(64))
    expected, expected_rates = plain_swa(5, swa_start=2, swa_lr=0.05, batch_norm=batch_norm)
    assert_same_tensors(expected.state_dict(), module.state_dict())
    assert rates[:5] == pytest.approx(expected_rates)
    assert int(swa.n_averaged) == 3
    # the batch-norm pass is one more epoch, forward only, whose single step changes nothing
    assert trainer.current_epoch == 5 + batch_norm and trainer.global_step == 5 * 2 + batch_norm
    assert trainer.fit_loop.max_epochs == 5 and trainer.accumulate_grad_batches == 1


def test_swa_state_is_checkpointed_and_a_resumed_fit_ends_the_same(tmp_path):
    def fit(epochs: int, **extra) -> Net:
        torch.manual_seed(0)
        module = Net()
        callbacks = [StochasticWeightAveraging(swa_lrs=0.05, swa_epoch_start=2), *extra.pop("callbacks", [])]
        quiet_trainer(max_epochs=epochs, callbacks=callbacks).fit(module, loader(64), **extra)
        return module

    uninterrupted = fit(5)
    fit(3, callbacks=[ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1)])
    state = torch.load(tmp_path / "epoch=2.ckpt", weights_only=True)["callbacks"]["StochasticWeightAveraging"]
    assert state["n_averaged"] == 2 and state["latest_update_epoch"] == 2
    assert state["scheduler_state"]["_anneal_strategy"] == "cos" and "net.0.weight" in state["average_model_state"]
    resumed = fit(5, ckpt_path=tmp_path / "epoch=2.ckpt")
    assert_same_tensors(uninterrupted.state_dict(), resumed.state_dict())


@pytest.mark.parametrize(("arguments", "message"), [
    ({"swa_lrs": 0.1, "swa_epoch_start": 0}, "swa_epoch_start should be a >0 integer"),
    ({"swa_lrs": -0.1}, "positive float"),
    ({"swa_lrs": [0.1, 1]}, "positive float"),
    ({"swa_lrs": 0.1, "avg_fn": 3}, "should be callable"),
])
def test_swa_refuses_invalid_settings(arguments, message):
    with pytest.raises(ConfigurationError, match=message):
        StochasticWeightAveraging(**arguments)


def test_swa_with_two_optimizers_is_refused():
    class Two(Net):
        def configure_optimizers(self):
            return [torch.optim.SGD(self.net[0].parameters(), lr=0.1),
                    torch.optim.SGD(self.net[3].parameters(), lr=0.1)]

        def training_step(self, batch, batch_idx):
            for optimizer in self.optimizers():
                optimizer.zero_grad()
                self.manual_backward(super().training_step(batch, batch_idx))
                optimizer.step()

    module = Two()
    module.automatic_optimization = False
    with pytest.raises(ConfigurationError, match="SWA currently works with 1 `optimizer`"):
        quiet_trainer(max_epochs=2, callbacks=[StochasticWeightAveraging(swa_lrs=0.1)]).fit(module, loader(64))


def plain_ema(epochs: int, decay: float) -> tuple[torch.nn.Module, list[float]]:
    """An EMA of the weights and buffers after every optimizer step, and the validation loss of the average."""
    torch.manual_seed(0)
    module = Net()
    average = AveragedModel(module, avg_fn=get_ema_avg_fn(decay), use_buffers=True)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    validation, losses = list(loader(32)), []
    for _ in range(epochs):
        for x, y in loader(64):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(module(x), y).backward()
            optimizer.step()
            average.update_parameters(module)
        with torch.no_grad():
            losses.append(float(sum(torch.nn.functional.mse_loss(average(x), y) for x, y in validation)))
    return average.module, losses


def test_ema_validates_with_the_average_and_ends_with_it():
    losses = []

    class RecordsValidation(Net):
        def on_validation_epoch_end(self):
            if not self.trainer.sanity_checking:
                losses.append(float(self.trainer.callback_metrics["val_loss"]))

    torch.manual_seed(0)
    module = RecordsValidation()
    trainer = quiet_trainer(max_epochs=3, callbacks=[EMAWeightAveraging(decay=0.9)])
    trainer.fit(module, loader(64), loader(32))
    expected, expected_losses = plain_ema(3, decay=0.9)
    assert_same_tensors(expected.state_dict(), module.state_dict())
    assert losses == pytest.approx(expected_losses, rel=1e-6)


def test_ema_checkpoints_hold_the_average_and_the_current_weights_and_resume_exactly(tmp_path):
    def fit(epochs: int, **extra) -> Net:
        torch.manual_seed(0)
        module = Net()
        callbacks = [EMAWeightAveraging(decay=0.9), *extra.pop("callbacks", [])]
        quiet_trainer(max_epochs=epochs, callbacks=callbacks).fit(module, loader(64), **extra)
        return module

    uninterrupted = fit(4)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1)
    fit(2, callbacks=[checkpoint])
    saved = torch.load(tmp_path / "epoch=1.ckpt", weights_only=True)
    assert saved["averaging_state"]["n_averaged"] == 4
    assert saved["current_model_state"].keys() == saved["state_dict"].keys()
    resumed = fit(4, ckpt_path=tmp_path / "epoch=1.ckpt")
    assert_same_tensors(uninterrupted.state_dict(), resumed.state_dict())
    loaded = Net.load_from_checkpoint(tmp_path / "epoch=1.ckpt")  # the average, ready to use
    assert_same_tensors(saved["state_dict"], loaded.state_dict())


def test_should_update_chooses_when_the_average_moves():
    class EveryOtherEpoch(WeightAveraging):
        def should_update(self, step_idx=None, epoch_idx=None):
            return epoch_idx is not None and epoch_idx % 2 == 1

    averaging = EveryOtherEpoch()
    quiet_trainer(max_epochs=4, callbacks=[averaging]).fit(Net(), loader(64))
    assert int(averaging._average_model.n_averaged) == 2  # after epochs 1 and 3

    ema = EMAWeightAveraging(update_every_n_steps=3, update_starting_at_step=2)
    assert [step for step in range(12) if ema.should_update(step_idx=step)] == [3, 6, 9]
    assert EMAWeightAveraging(update_starting_at_epoch=1).should_update(epoch_idx=1)
