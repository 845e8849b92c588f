"""The loop's steps a Module overrides (optimizer_step, optimizer_zero_grad, backward, configure_gradient_clipping,
lr_scheduler_step, the batch transfer hooks, predict_step): each gives the weights a hand-written loop doing the
same gets."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

import trellis
from reference_net import EPOCHS, Net, assert_same_weights, data, fit
from support import quiet_trainer
from trellis.errors import ConfigurationError


def test_a_warm_up_in_optimizer_step_trains_like_the_hand_written_loop():
    class WarmUp(Net):
        def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure):
            assert isinstance(optimizer, torch.optim.SGD)
            optimizer.step(closure=optimizer_closure)
            if self.trainer.global_step < 5:
                for group in optimizer.param_groups:
                    group["lr"] = min(1.0, (self.trainer.global_step + 1) / 5) * self.lr

    trained, reference = WarmUp(), Net()
    trainer = fit(trained)
    optimizer = reference.configure_optimizers()
    step = 0
    for _ in range(EPOCHS):
        for batch in data():
            optimizer.zero_grad()
            reference.loss(batch).backward()
            optimizer.step()
            if step < 5:
                optimizer.param_groups[0]["lr"] = min(1.0, (step + 1) / 5) * Net.lr
            step += 1
    assert_same_weights(trained, reference)
    assert trainer.global_step == step


def test_lbfgs_re_evaluates_the_loss_through_the_closure():
    class Quasi(Net):
        def configure_optimizers(self):
            return torch.optim.LBFGS(self.parameters(), lr=0.5, max_iter=4)

    trained, reference = Quasi(), Quasi()
    fit(trained)
    optimizer = reference.configure_optimizers()
    for _ in range(EPOCHS):
        for batch in data():
            def closure(batch=batch):
                loss = reference.loss(batch)
                optimizer.zero_grad()
                loss.backward()
                return loss

            optimizer.step(closure)
    assert_same_weights(trained, reference)


def test_skipping_steps_in_optimizer_step_still_runs_the_batch():
    calls = []

    class EveryOther(Net):
        def training_step(self, batch, batch_idx):
            calls.append(batch_idx)
            return super().training_step(batch, batch_idx)

        def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure):
            if batch_idx % 2 == 0:
                optimizer.step(closure=optimizer_closure)
            else:
                optimizer_closure()  # training_step and backward run; no step

    trained, reference = EveryOther(), Net()
    trainer = fit(trained)
    optimizer = reference.configure_optimizers()
    for _ in range(EPOCHS):
        for index, batch in enumerate(data()):
            optimizer.zero_grad()
            reference.loss(batch).backward()
            if index % 2 == 0:
                optimizer.step()
    assert_same_weights(trained, reference)
    assert calls == list(range(8)) * EPOCHS
    assert trainer.global_step == 16  # as in Lightning: each optimizer_step call counts


def test_optimizer_zero_grad_override_accumulates_gradients_over_two_batches():
    class Accumulating(Net):
        def optimizer_zero_grad(self, epoch, batch_idx, optimizer):
            if batch_idx % 2 == 0:
                optimizer.zero_grad(set_to_none=False)

    trained, reference = Accumulating(), Net()
    fit(trained)
    optimizer = reference.configure_optimizers()
    for _ in range(EPOCHS):
        for index, batch in enumerate(data()):
            if index % 2 == 0:
                optimizer.zero_grad(set_to_none=False)
            reference.loss(batch).backward()
            optimizer.step()
    assert_same_weights(trained, reference)


def test_backward_override_is_what_the_loss_goes_through():
    class Doubled(Net):
        def backward(self, loss, *args, **kwargs):
            (2 * loss).backward(*args, **kwargs)

    trained, reference = Doubled(), Net()
    fit(trained, accumulate_grad_batches=2)
    optimizer = reference.configure_optimizers()
    for _ in range(EPOCHS):
        for index, batch in enumerate(data()):
            (2 * reference.loss(batch) / 2).backward()  # the loss it receives is divided by the accumulation
            if index % 2 == 1:
                optimizer.step()
                optimizer.zero_grad()
    assert_same_weights(trained, reference)


def test_configure_gradient_clipping_with_clip_gradients_clips_as_asked():
    seen = []

    class ClipsLater(Net):
        def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
            seen.append((gradient_clip_val, gradient_clip_algorithm))
            if self.current_epoch > 0:
                self.clip_gradients(optimizer, gradient_clip_val=0.05, gradient_clip_algorithm="norm")

    trained, reference = ClipsLater(), Net()
    fit(trained)
    optimizer = reference.configure_optimizers()
    for epoch in range(EPOCHS):
        for batch in data():
            optimizer.zero_grad()
            reference.loss(batch).backward()
            if epoch > 0:
                torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.05)
            optimizer.step()
    assert_same_weights(trained, reference)
    assert seen[0] == (None, "norm")


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_the_trainer_s_clipping_flags_clip_every_step(algorithm):
    trained, reference = Net(), Net()
    fit(trained, gradient_clip_val=0.02, gradient_clip_algorithm=algorithm)
    optimizer = reference.configure_optimizers()
    clip = torch.nn.utils.clip_grad_norm_ if algorithm == "norm" else torch.nn.utils.clip_grad_value_
    for _ in range(EPOCHS):
        for batch in data():
            optimizer.zero_grad()
            reference.loss(batch).backward()
            clip(reference.parameters(), 0.02)
            optimizer.step()
    assert_same_weights(trained, reference)


def test_clip_gradients_refuses_values_that_contradict_the_trainer():
    class Contradicting(Net):
        def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
            self.clip_gradients(optimizer, gradient_clip_val=0.5)

    with pytest.raises(ConfigurationError, match=r"gradient_clip_val=0.1\) and clip_gradients\(gradient_clip_val=0.5"):
        fit(Contradicting(), gradient_clip_val=0.1)

    class ByValue(Net):
        def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
            self.clip_gradients(optimizer, gradient_clip_val=0.5, gradient_clip_algorithm="norm")

    with pytest.raises(ConfigurationError, match="gradient_clip_algorithm='value'"):
        fit(ByValue(), gradient_clip_algorithm="value")


class EpochScheduler:
    """A scheduler of another library: stepped with the epoch number, not a torch LRScheduler."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.steps: list[int] = []

    def step(self, epoch: int) -> None:
        self.steps.append(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = Net.lr / (epoch + 2)

    def state_dict(self) -> dict:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.steps = state["steps"]


def test_lr_scheduler_step_override_steps_a_scheduler_of_another_kind():
    class Custom(Net):
        def configure_optimizers(self):
            optimizer = super().configure_optimizers()
            schedule = {"scheduler": EpochScheduler(optimizer), "interval": "epoch"}
            return {"optimizer": optimizer, "lr_scheduler": schedule}

        def lr_scheduler_step(self, scheduler, metric):
            scheduler.step(epoch=self.current_epoch)

    trained, reference = Custom(), Net()
    trainer = fit(trained)
    optimizer = reference.configure_optimizers()
    for epoch in range(EPOCHS):
        for batch in data():
            optimizer.zero_grad()
            reference.loss(batch).backward()
            optimizer.step()
        for group in optimizer.param_groups:
            group["lr"] = Net.lr / (epoch + 2)
    assert_same_weights(trained, reference)
    assert trainer.lr_scheduler_configs[0].scheduler.steps == [0, 1]


class Pair:
    """A batch of a custom type that only its own transfer knows how to move."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y


class Transferring(Net):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []

    def on_before_batch_transfer(self, batch, dataloader_idx):
        self.calls.append(("before", dataloader_idx))
        return Pair(*batch)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        self.calls.append(("transfer", device.type, dataloader_idx))
        return Pair(batch.x.to(device), batch.y.to(device))

    def on_after_batch_transfer(self, batch, dataloader_idx):
        self.calls.append(("after", dataloader_idx))
        return batch.x * 2, batch.y

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self.calls.append(("validation_step", dataloader_idx))


def test_batch_transfer_hooks_run_in_lightning_s_order_for_training_and_each_validation_loader():
    trained, reference = Transferring(), Net()
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(trained, data(), [data(), data()])
    batch = ["before", "transfer", "after"]
    assert [call[0] for call in trained.calls] == batch * 2 + batch + ["validation_step"] + batch + ["validation_step"]
    assert trained.calls[-4:] == [("before", 1), ("transfer", "cpu", 1), ("after", 1), ("validation_step", 1)]
    optimizer = reference.configure_optimizers()
    for _, (x, y) in zip(range(2), data()):
        optimizer.zero_grad()
        reference.loss((x * 2, y)).backward()
        optimizer.step()
    assert_same_weights(trained, reference)


def test_a_datamodule_s_transfer_hooks_take_precedence_over_the_module_s():
    module = Transferring()

    class Data(trellis.DataModule):
        def train_dataloader(self):
            return data()

        def on_after_batch_transfer(self, batch, dataloader_idx):
            module.calls.append(("datamodule after", dataloader_idx))
            return batch.x, batch.y

    quiet_trainer(max_steps=1).fit(module, datamodule=Data())
    assert module.calls == [("before", 0), ("transfer", "cpu", 0), ("datamodule after", 0)]


def test_the_default_predict_step_returns_forward_s_output():
    module = Net()
    inputs = torch.randn(6, 6)
    predictions = quiet_trainer().predict(module, DataLoader(inputs, batch_size=3))
    with torch.no_grad():
        assert all(torch.equal(prediction, module(x)) for prediction, x in zip(predictions, inputs.split(3)))
    assert len(predictions) == 2
