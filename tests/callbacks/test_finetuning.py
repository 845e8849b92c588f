"""BaseFinetuning and BackboneFinetuning: frozen before training, unfrozen into a new param group of the live
optimizer, the groups restored on resume."""

from __future__ import annotations

import warnings

import pytest
import torch

import trellis
from support import loader, quiet_trainer
from trellis.callbacks import BackboneFinetuning, BaseFinetuning, ModelCheckpoint
from trellis.errors import ConfigurationError


class WithBackbone(trellis.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.Tanh())
        self.head = torch.nn.Linear(16, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.head(self.backbone(x)), y)

    def configure_optimizers(self):
        return torch.optim.SGD(filter(lambda p: p.requires_grad, self.parameters()), lr=0.1)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in module.state_dict().items()}


def test_the_backbone_trains_from_its_epoch_on_at_the_scheduled_rates():
    rates = []

    class RecordsRates(WithBackbone):
        def on_train_epoch_end(self):
            rates.append([group["lr"] for group in self.trainer.optimizers[0].param_groups])

    torch.manual_seed(0)
    module = RecordsRates()
    linear_before = snapshot(module.backbone[0])
    callback = BackboneFinetuning(unfreeze_backbone_at_epoch=2, backbone_initial_ratio_lr=0.1, should_align=True)
    trainer = quiet_trainer(max_epochs=6, callbacks=[callback])
    with pytest.warns(UserWarning, match="already exist within another group"):  # the batch norm trains already
        trainer.fit(module, loader(64))
    backbone_rates = [0.1 * 0.1]
    while len(backbone_rates) < 4:  # doubling each epoch (multiplicative), capped at the optimizer's rate
        backbone_rates.append(min(backbone_rates[-1] * 2, 0.1))
    assert rates[:2] == [[0.1], [0.1]]
    assert [group_rates[1] for group_rates in rates[2:]] == pytest.approx(backbone_rates)
    assert all(parameter.requires_grad for parameter in module.backbone.parameters())
    assert not torch.equal(module.backbone[0].weight, linear_before["weight"])


def test_the_backbone_stays_untouched_while_frozen_but_batch_norm_trains():
    torch.manual_seed(0)
    module = WithBackbone()
    linear_before, norm_before = snapshot(module.backbone[0]), snapshot(module.backbone[1])
    quiet_trainer(max_epochs=2, callbacks=[BackboneFinetuning(unfreeze_backbone_at_epoch=5)]).fit(module, loader(64))
    assert all(torch.equal(tensor, linear_before[name]) for name, tensor in module.backbone[0].state_dict().items())
    assert not torch.equal(module.backbone[1].weight, norm_before["weight"])  # train_bn=True
    assert module.backbone[1].track_running_stats


def test_a_resumed_fit_gets_the_added_param_groups_back_and_ends_as_an_uninterrupted_one(tmp_path):
    def fit(epochs: int, ckpt_path=None, checkpoint=None) -> WithBackbone:
        torch.manual_seed(0)
        module = WithBackbone()
        callbacks = [BackboneFinetuning(unfreeze_backbone_at_epoch=1)] + ([checkpoint] if checkpoint else [])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "The provided params to be frozen already exist")
            quiet_trainer(max_epochs=epochs, callbacks=callbacks).fit(module, loader(64), ckpt_path=ckpt_path)
        return module

    uninterrupted = fit(4)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1)
    fit(2, checkpoint=checkpoint)
    saved = torch.load(tmp_path / "epoch=1.ckpt", weights_only=True)
    groups = saved["callbacks"]["BackboneFinetuning"]["internal_optimizer_metadata"][0]
    # the optimizer began with the head and the batch norm (train_bn); the linear layer came with the unfreezing
    assert [sorted(group["params"]) for group in groups] == [
        ["backbone.1.bias", "backbone.1.weight", "head.bias", "head.weight"], ["backbone.0.bias", "backbone.0.weight"]]
    resumed = fit(4, ckpt_path=tmp_path / "epoch=1.ckpt")
    for name, tensor in uninterrupted.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], tensor, rtol=0, atol=0)


def test_a_custom_finetuning_uses_the_helpers():
    class UnfreezeHeadLater(BaseFinetuning):
        def freeze_before_training(self, pl_module):
            self.freeze([pl_module.head, pl_module.backbone[1]], train_bn=False)

        def finetune_function(self, pl_module, epoch, optimizer):
            if epoch == 1:
                self.unfreeze_and_add_param_group(pl_module.head, optimizer, initial_denom_lr=4.0)

    class TrainsWhatIsTrainable(WithBackbone):
        def configure_optimizers(self):
            return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.2)

    module = TrainsWhatIsTrainable()
    norm_before = snapshot(module.backbone[1])
    trainer = quiet_trainer(max_epochs=2, callbacks=[UnfreezeHeadLater()])
    trainer.fit(module, loader(64))
    groups = trainer.optimizers[0].param_groups
    assert [group["lr"] for group in groups] == [0.2, 0.2 / 4.0]
    assert groups[1]["params"] == list(module.head.parameters())
    assert not module.backbone[1].track_running_stats  # frozen with train_bn=False: no statistics, no updates
    assert all(torch.equal(tensor, norm_before[name]) for name, tensor in module.backbone[1].state_dict().items())
    assert BaseFinetuning.flatten_modules(module.backbone) == list(module.backbone)


def test_parameters_with_equal_values_are_still_added():
    class TwoNorms(trellis.Module):
        def __init__(self):
            super().__init__()
            self.head, self.backbone = torch.nn.LayerNorm(4), torch.nn.LayerNorm(4)  # both weights are ones

    module = TwoNorms()
    optimizer = torch.optim.SGD(module.head.parameters(), lr=0.1)
    BaseFinetuning.freeze(module.backbone)
    BaseFinetuning.unfreeze_and_add_param_group(module.backbone, optimizer)
    assert optimizer.param_groups[1]["params"] == list(module.backbone.parameters())


def test_a_module_without_backbone_is_refused():
    class NoBackbone(WithBackbone):
        def __init__(self):
            super().__init__()
            self.trunk = self.backbone
            del self.backbone

        def freeze_before_training(self, pl_module):
            pass

    class Lenient(BackboneFinetuning):
        def freeze_before_training(self, pl_module):
            pass

    with pytest.raises(ConfigurationError, match="should have a nn.Module `backbone` attribute"):
        quiet_trainer(max_epochs=1, callbacks=[Lenient()]).fit(NoBackbone(), loader(64))
