"""LambdaCallback (hooks from functions) and GradientAccumulationScheduler (accumulation per epoch), the latter
against a plain PyTorch loop with the same schedule."""

from __future__ import annotations

import math

import pytest
import torch

from support import TinyRegressor, loader, quiet_trainer
from trellis.callbacks import GradientAccumulationScheduler, LambdaCallback
from trellis.errors import ConfigurationError
from trellis.hookspecs import HOOK_NAMES


def test_every_hook_can_be_a_function_called_with_lightnings_arguments():
    calls: dict[str, tuple] = {}

    def recorder(hook):
        def record(*arguments):
            calls.setdefault(hook, arguments)
        return record

    callback = LambdaCallback(**{hook: recorder(hook) for hook in HOOK_NAMES})
    trainer = quiet_trainer(max_epochs=1, callbacks=[callback])
    module = TinyRegressor()
    trainer.fit(module, loader(64), loader(32))
    batch_end = calls["on_train_batch_end"]
    assert batch_end[:2] == (trainer, module) and batch_end[4] == 0  # trainer, module, outputs, batch, batch_idx
    assert torch.equal(batch_end[3][0], next(iter(loader(64)))[0])
    assert calls["on_init_start"] == (trainer,)
    assert calls["setup"] == (trainer, module, "fit")
    assert {"on_fit_start", "on_sanity_check_end", "on_validation_batch_end", "on_train_end", "teardown"} <= set(calls)


def test_a_lambda_callback_keeps_its_functions_as_attributes():
    def on_fit_end(trainer, pl_module):
        pass

    callback = LambdaCallback(on_fit_end=on_fit_end)
    assert callback.on_fit_end is on_fit_end and isinstance(callback, LambdaCallback)


def test_a_name_that_is_not_a_hook_is_refused():
    with pytest.raises(ConfigurationError, match="on_train_epoch_ends, which are not hooks"):
        LambdaCallback(on_train_epoch_ends=print)


def plain_accumulating_fit(schedule: dict[int, int], epochs: int, data) -> TinyRegressor:
    """The same training by hand: losses scaled by the factor, a step at each window's end or the epoch's end."""
    torch.manual_seed(0)
    module = TinyRegressor()
    optimizer = torch.optim.SGD(module.parameters(), lr=module.hparams.lr)
    batches = list(data)
    for epoch in range(epochs):
        factor = next(schedule[start] for start in sorted(schedule, reverse=True) if epoch >= start)
        for index, (x, y) in enumerate(batches):
            loss = torch.nn.functional.mse_loss(module.net(x), y) / factor
            loss.backward()
            if (index + 1) % factor == 0 or index + 1 == len(batches):
                optimizer.step()
                optimizer.zero_grad()
    return module


def test_the_schedule_sets_the_accumulation_of_each_epoch_as_a_plain_loop_does():
    schedule = {0: 1, 1: 2, 3: 4}
    steps = []

    class CountsSteps(TinyRegressor):
        def on_train_epoch_end(self):
            steps.append(self.trainer.global_step)

    torch.manual_seed(0)
    module = CountsSteps()
    trainer = quiet_trainer(max_epochs=4, callbacks=[GradientAccumulationScheduler({1: 2, 3: 4})])
    trainer.fit(module, loader(320))  # 10 batches per epoch
    expected = [math.ceil(10 / factor) for factor in (1, 2, 2, 4)]
    assert [after - before for before, after in zip([0, *steps], steps)] == expected
    assert trainer.accumulate_grad_batches == 4
    plain = plain_accumulating_fit(schedule, 4, loader(320))
    for ours, theirs in zip(module.parameters(), plain.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_the_schedule_starts_at_one_and_takes_the_latest_epoch_at_or_before():
    scheduler = GradientAccumulationScheduler({2: 3, 5: 2})
    assert [scheduler.get_accumulate_grad_batches(epoch) for epoch in range(7)] == [1, 1, 3, 3, 3, 2, 2]
    assert scheduler.going_to_accumulate_grad_batches()


@pytest.mark.parametrize(("schedule", "error", "message"), [
    ({}, TypeError, "Empty dict"),
    ({-1: 2}, ConfigurationError, "Epoch should be an int greater than or equal to 0"),
    ({1: 0}, ConfigurationError, "Accumulation factor should be an int greater than 0"),
])
def test_invalid_schedules_are_refused(schedule, error, message):
    with pytest.raises(error, match=message):
        GradientAccumulationScheduler(schedule)


def test_it_conflicts_with_the_accumulation_flag_and_with_manual_optimization():
    with pytest.raises(ValueError, match="remove `accumulate_grad_batches` from the Trainer or remove the callback"):
        quiet_trainer(max_epochs=1, accumulate_grad_batches=2,
                      callbacks=[GradientAccumulationScheduler({0: 2})]).fit(TinyRegressor(), loader(64))

    class Manual(TinyRegressor):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

    with pytest.raises(RuntimeError, match="not supported for manual optimization"):
        quiet_trainer(max_epochs=1, callbacks=[GradientAccumulationScheduler({0: 2})]).fit(Manual(), loader(64))
