"""Manual optimization as in Lightning: the module steps its optimizers and schedulers; the numbers are those of a
hand-written loop doing the same."""

from __future__ import annotations

import pytest
import torch

from reference_net import EPOCHS, Net, assert_same_weights, data
from support import quiet_trainer
from trellis.errors import ConfigurationError


class TwoOptimizers(Net):
    """The first layer and the head each have an optimizer and a scheduler the module steps itself."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.kinds: list[tuple] = []

    def configure_optimizers(self):
        body = torch.optim.SGD(self.net[0].parameters(), lr=0.05, momentum=0.9)
        head = torch.optim.Adam(self.net[2].parameters(), lr=0.01)
        return [body, head], [torch.optim.lr_scheduler.StepLR(body, 1, 0.5),
                              {"scheduler": torch.optim.lr_scheduler.StepLR(head, 1, 0.1), "interval": "step"}]

    def training_step(self, batch, batch_idx):
        body, head = self.optimizers()
        self.kinds.append((isinstance(body, torch.optim.SGD), isinstance(head, torch.optim.Adam),
                           body.param_groups is self.trainer.optimizers[0].param_groups))
        body.zero_grad()
        head.zero_grad()
        loss = self.loss(batch)
        self.manual_backward(loss)
        body.step()
        if batch_idx % 2 == 0:
            head.step()
        self.log("loss", loss)

    def on_train_epoch_end(self):
        body_schedule, _ = self.lr_schedulers()
        body_schedule.step()


def test_two_optimizers_stepped_by_the_module_train_like_the_hand_written_loop():
    trained, reference = TwoOptimizers(), Net()
    trainer = quiet_trainer(max_epochs=EPOCHS)
    trainer.fit(trained, data())
    body = torch.optim.SGD(reference.net[0].parameters(), lr=0.05, momentum=0.9)
    head = torch.optim.Adam(reference.net[2].parameters(), lr=0.01)
    body_schedule = torch.optim.lr_scheduler.StepLR(body, 1, 0.5)
    steps = 0
    for _ in range(EPOCHS):
        for index, batch in enumerate(data()):
            body.zero_grad()
            head.zero_grad()
            reference.loss(batch).backward()
            body.step()
            steps += 1
            if index % 2 == 0:
                head.step()
                steps += 1
        body_schedule.step()
    assert_same_weights(trained, reference)
    assert set(trained.kinds) == {(True, True, True)}
    # the loop steps no scheduler, not even a step-interval one: the head's learning rate never changed
    assert [optimizer.param_groups[0]["lr"] for optimizer in trainer.optimizers] == [0.05 * 0.5 ** EPOCHS, 0.01]
    assert trainer.global_step == steps  # every optimizer step counts


def test_optimizer_step_with_a_closure_and_clipping_between_backward_and_step():
    class Closure(Net):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False

        def configure_optimizers(self):
            return torch.optim.LBFGS(self.parameters(), lr=0.5, max_iter=3)

        def training_step(self, batch, batch_idx):
            optimizer = self.optimizers()

            def closure():
                optimizer.zero_grad()
                loss = self.loss(batch)
                self.manual_backward(loss)
                self.clip_gradients(optimizer, gradient_clip_val=0.1, gradient_clip_algorithm="norm")
                return loss

            optimizer.step(closure=closure)

    trained, reference = Closure(), Closure()
    quiet_trainer(max_epochs=EPOCHS).fit(trained, data())
    optimizer = reference.configure_optimizers()
    for _ in range(EPOCHS):
        for batch in data():
            def closure(batch=batch):
                optimizer.zero_grad()
                loss = reference.loss(batch)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.1)
                return loss

            optimizer.step(closure)
    assert_same_weights(trained, reference)


def test_manual_backward_passes_its_arguments_to_backward():
    class TwoLosses(Net):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            optimizer = self.optimizers()
            optimizer.zero_grad()
            hidden = self.net[1](self.net[0](batch[0]))
            first, second = self.net[2](hidden).pow(2).mean(), hidden.pow(2).mean()
            self.manual_backward(first, retain_graph=True)  # the graph through `hidden` is needed again
            self.manual_backward(second)
            optimizer.step()

    trained, reference = TwoLosses(), Net()
    quiet_trainer(max_epochs=1).fit(trained, data())
    optimizer = reference.configure_optimizers()
    for x, _ in data():
        optimizer.zero_grad()
        hidden = reference.net[1](reference.net[0](x))
        (reference.net[2](hidden).pow(2).mean() + hidden.pow(2).mean()).backward()
        optimizer.step()
    for value, expected in zip(trained.parameters(), reference.parameters()):
        torch.testing.assert_close(value, expected)


def test_manual_backward_belongs_to_manual_optimization():
    class Automatic(Net):
        def training_step(self, batch, batch_idx):
            self.manual_backward(self.loss(batch))

    with pytest.raises(ConfigurationError, match="automatic_optimization = False"):
        quiet_trainer(max_steps=1).fit(Automatic(), data())


def test_hooks_around_a_manual_step_run_as_in_automatic_optimization():
    calls = []

    class Hooked(Net):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            optimizer = self.optimizers()
            optimizer.zero_grad()
            self.manual_backward(self.loss(batch))
            optimizer.step()

        def on_before_backward(self, loss):
            calls.append("on_before_backward")

        def on_after_backward(self):
            calls.append("on_after_backward")

        def on_before_optimizer_step(self, optimizer):
            calls.append("on_before_optimizer_step")

    quiet_trainer(max_steps=1).fit(Hooked(), data())
    assert calls == ["on_before_backward", "on_after_backward", "on_before_optimizer_step"]
