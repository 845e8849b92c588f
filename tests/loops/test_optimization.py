"""configure_optimizers in every form, schedulers, manual and classic multi-optimizer training."""

from __future__ import annotations

import pytest
import torch

from support import TinyRegressor, loader, quiet_trainer
from trellis.errors import ConfigurationError


def _fit_with(configure, **flags):
    class Configured(TinyRegressor):
        def configure_optimizers(self):
            return configure(self)

    trainer = quiet_trainer(**{"max_epochs": 2, **flags})
    trainer.fit(Configured(), loader(), loader(64))
    return trainer


def test_optimizer_and_scheduler_tuple_steps_per_epoch():
    def configure(module):
        optimizer = torch.optim.SGD(module.parameters(), lr=1.0)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)]

    trainer = _fit_with(configure)
    assert trainer.optimizers[0].param_groups[0]["lr"] == 0.25


def test_dict_with_step_interval_and_frequency():
    def configure(module):
        optimizer = torch.optim.SGD(module.parameters(), lr=1.0)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 4}}

    trainer = _fit_with(configure)  # 16 steps, a scheduler step every 4
    assert trainer.optimizers[0].param_groups[0]["lr"] == 0.5 ** 4


def test_reduce_on_plateau_reads_the_monitored_metric_and_requires_one():
    def configure(module):
        optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=0, threshold=10.0)
        return {"optimizer": optimizer, "lr_scheduler": plateau, "monitor": "val_loss"}

    trainer = _fit_with(configure)
    assert trainer.optimizers[0].param_groups[0]["lr"] < 0.1

    def unmonitored(module):
        optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
        return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)}

    with pytest.raises(ConfigurationError, match="monitor"):
        _fit_with(unmonitored)


def test_several_optimizers_need_manual_or_classic_form():
    def two(module):
        return [torch.optim.SGD(module.net[0].parameters(), lr=0.1),
                torch.optim.SGD(module.net[2].parameters(), lr=0.1)]

    with pytest.raises(ConfigurationError, match="automatic_optimization = False"):
        _fit_with(two)


def test_classic_alternating_optimizer_idx_steps_each_optimizer():
    calls = []

    class Alternating(TinyRegressor):
        def training_step(self, batch, batch_idx, optimizer_idx):
            calls.append(optimizer_idx)
            return super().training_step(batch, batch_idx)

        def configure_optimizers(self):
            return [torch.optim.SGD(self.net[0].parameters(), lr=0.1),
                    torch.optim.SGD(self.net[2].parameters(), lr=0.1)]

    trainer = quiet_trainer(max_epochs=1, limit_train_batches=3)
    trainer.fit(Alternating(), loader())
    assert calls == [0, 1] * 3 and trainer.global_step == 3


def test_manual_optimization_with_two_optimizers():
    class Manual(TinyRegressor):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            first, second = self.optimizers()
            loss = super().training_step(batch, batch_idx)
            first.zero_grad()
            second.zero_grad()
            self.manual_backward(loss)
            first.step()
            second.step()

        def configure_optimizers(self):
            return [torch.optim.SGD(self.net[0].parameters(), lr=0.1),
                    torch.optim.SGD(self.net[2].parameters(), lr=0.1)]

    module = Manual()
    before = [p.clone() for p in module.parameters()]
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=4)
    trainer.fit(module, loader())
    assert trainer.global_step == 8  # each optimizer step counts, as in Lightning
    assert all(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


def test_classic_epoch_end_receives_outputs_and_its_log_dict_is_logged():
    class Classic(TinyRegressor):
        def validation_step(self, batch, batch_idx):
            return {"val_loss": torch.nn.functional.mse_loss(self.net(batch[0]), batch[1])}

        def validation_epoch_end(self, outputs):
            mean = torch.stack([output["val_loss"] for output in outputs]).mean()
            return {"log": {"classic_val_loss": mean}}

    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(Classic(), loader(), loader(64))
    assert "classic_val_loss" in trainer.callback_metrics
