"""What the kernel hands a strategy: the Trainer's training settings at setup, and which loader trains."""

from __future__ import annotations

from collections.abc import Iterable

from support import TinyRegressor, loader, quiet_trainer
from trellis.plugin import SingleDeviceStrategy
from trellis.roles.strategy import TrainingSettings


class Recording(SingleDeviceStrategy):
    def __init__(self) -> None:
        super().__init__()
        self.loaders: list[bool] = []

    def process_dataloader(self, dataloader: Iterable, training: bool = False) -> Iterable:
        self.loaders.append(training)
        return super().process_dataloader(dataloader, training)


def test_setup_receives_the_trainers_accumulation_and_clipping_flags() -> None:
    strategy = Recording()
    trainer = quiet_trainer(strategy=strategy, max_epochs=1, limit_train_batches=2, limit_val_batches=1,
                            num_sanity_val_steps=0, accumulate_grad_batches=2, gradient_clip_val=0.5,
                            gradient_clip_algorithm="value")
    trainer.fit(TinyRegressor(), loader(), loader())
    assert strategy.training_settings == TrainingSettings(accumulate_grad_batches=2, gradient_clip_val=0.5,
                                                          gradient_clip_algorithm="value")
    assert strategy.loaders == [True, False]  # the training loader, then validation's


def test_a_strategy_not_yet_set_up_has_the_trainers_defaults() -> None:
    assert Recording().training_settings == TrainingSettings(1, None, "norm")
