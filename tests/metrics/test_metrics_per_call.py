"""Each fit, validate, test and predict starts with no metrics; the sanity check leaves none behind."""

from __future__ import annotations

import torch

import trellis
from support import TinyRegressor, loader, quiet_trainer


class WithTestStep(TinyRegressor):
    def forward(self, x):
        return self.net(x)

    def test_step(self, batch, batch_idx):
        self.log("test_loss", torch.nn.functional.mse_loss(self.net(batch[0]), batch[1]), prog_bar=True)


def metric_names(trainer: trellis.Trainer) -> tuple[set[str], set[str], set[str]]:
    return set(trainer.callback_metrics), set(trainer.logged_metrics), set(trainer.progress_bar_metrics)


def test_each_entry_point_starts_from_empty_metrics(recording_logger):
    module = WithTestStep()
    trainer = quiet_trainer(max_epochs=1, logger=recording_logger)
    trainer.fit(module, loader(64), loader(64))
    assert metric_names(trainer) == ({"train_loss", "val_loss"}, {"train_loss", "val_loss"}, {"val_loss"})

    trainer.test(module, loader(64), verbose=False)
    assert metric_names(trainer) == ({"test_loss"}, {"test_loss"}, {"test_loss"})

    trainer.validate(module, loader(64), verbose=False)
    assert metric_names(trainer) == ({"val_loss"}, {"val_loss"}, {"val_loss"})

    trainer.predict(module, [x for x, _ in loader(64)])
    assert metric_names(trainer) == (set(), set(), set())

    trainer.fit_loop.max_epochs = 2
    trainer.fit(module, loader(64))  # a second fit, without validation this time
    assert metric_names(trainer) == ({"train_loss"}, {"train_loss"}, set())


def test_the_sanity_check_leaves_no_metrics():
    class SeesTrainStart(trellis.Callback):
        def on_train_start(self, trainer, pl_module):
            self.seen = metric_names(trainer)

    seen = SeesTrainStart()
    trainer = quiet_trainer(max_epochs=1, num_sanity_val_steps=2, callbacks=[seen], logger=False)
    trainer.fit(TinyRegressor(), loader(64), loader(64))
    assert seen.seen == (set(), set(), set())
