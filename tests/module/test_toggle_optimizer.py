"""toggle_optimizer/untoggle_optimizer/toggled_optimizer: only the toggled optimizer's parameters get gradients,
and every parameter's requires_grad comes back exactly as it was (a GAN trains as a hand-written loop does)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import trellis
from support import quiet_trainer


def _states(module: torch.nn.Module) -> dict[str, bool]:
    return {name: parameter.requires_grad for name, parameter in module.named_parameters()}


class ThreeParts(trellis.Module):
    """Two optimizers over `first` and `second`; `shared` belongs to both; `first.bias` starts frozen."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.first = torch.nn.Linear(2, 2)
        self.second = torch.nn.Linear(2, 2)
        self.shared = torch.nn.Linear(2, 2)
        self.first.bias.requires_grad_(False)
        self.seen: list[tuple[str, dict[str, bool]]] = []

    def configure_optimizers(self):
        return (torch.optim.SGD([*self.first.parameters(), *self.shared.parameters()], lr=0.1),
                torch.optim.SGD([*self.second.parameters(), *self.shared.parameters()], lr=0.1))

    def training_step(self, batch, batch_idx):
        first, second = self.optimizers()
        self.seen.append(("before", _states(self)))
        self.toggle_optimizer(first)
        self.seen.append(("first toggled", _states(self)))
        self.untoggle_optimizer(first)
        self.seen.append(("first untoggled", _states(self)))
        with self.toggled_optimizer(second):
            self.seen.append(("second toggled", _states(self)))
        self.seen.append(("second untoggled", _states(self)))


def test_toggling_switches_off_the_other_optimizers_parameters_and_restores_them_exactly():
    module = ThreeParts()
    quiet_trainer(max_epochs=1).fit(module, DataLoader(TensorDataset(torch.zeros(1, 2))))
    initial = {"first.weight": True, "first.bias": False, "second.weight": True, "second.bias": True,
               "shared.weight": True, "shared.bias": True}
    assert dict(module.seen) == {
        "before": initial,
        # its own parameters keep their state (the frozen bias stays frozen, the shared layer stays trainable)
        "first toggled": {**initial, "second.weight": False, "second.bias": False},
        "first untoggled": initial,
        "second toggled": {**initial, "first.weight": False},
        "second untoggled": initial,
    }


def test_toggled_optimizer_restores_the_states_when_the_block_raises():
    class Failing(ThreeParts):
        def training_step(self, batch, batch_idx):
            first, _ = self.optimizers()
            with pytest.raises(RuntimeError, match="inside"), self.toggled_optimizer(first):
                raise RuntimeError("inside")
            self.seen.append(("after", _states(self)))

    module = Failing()
    quiet_trainer(max_epochs=1).fit(module, DataLoader(TensorDataset(torch.zeros(1, 2))))
    assert dict(module.seen)["after"]["second.weight"] is True


class TinyGAN(trellis.Module):
    """The basic-GAN tutorial's training step on vectors: the generator's loss goes through the discriminator,
    whose parameters are toggled off so that only the generator's get gradients from it."""

    def __init__(self, toggles: bool = True) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.toggles = toggles
        torch.manual_seed(0)
        self.generator = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4))
        self.discriminator = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))

    def configure_optimizers(self):
        return (torch.optim.Adam(self.generator.parameters(), lr=0.01),
                torch.optim.Adam(self.discriminator.parameters(), lr=0.01))

    def training_step(self, batch, batch_idx):
        real, noise = batch
        optimizer_g, optimizer_d = self.optimizers()
        if self.toggles:
            self.toggle_optimizer(optimizer_g)
        g_loss = gan_generator_loss(self.generator, self.discriminator, noise)
        self.manual_backward(g_loss)
        optimizer_g.step()
        optimizer_g.zero_grad()
        if self.toggles:
            self.untoggle_optimizer(optimizer_g)
            self.toggle_optimizer(optimizer_d)
        d_loss = gan_discriminator_loss(self.generator, self.discriminator, real, noise)
        self.manual_backward(d_loss)
        optimizer_d.step()
        optimizer_d.zero_grad()
        if self.toggles:
            self.untoggle_optimizer(optimizer_d)


def gan_generator_loss(generator, discriminator, noise):
    scores = discriminator(generator(noise))
    return torch.nn.functional.binary_cross_entropy_with_logits(scores, torch.ones_like(scores))


def gan_discriminator_loss(generator, discriminator, real, noise):
    real_scores, fake_scores = discriminator(real), discriminator(generator(noise).detach())
    return (torch.nn.functional.binary_cross_entropy_with_logits(real_scores, torch.ones_like(real_scores))
            + torch.nn.functional.binary_cross_entropy_with_logits(fake_scores, torch.zeros_like(fake_scores))) / 2


def _gan_data() -> DataLoader:
    generator = torch.Generator().manual_seed(1)
    real = torch.randn(32, 4, generator=generator) * 0.5 + 1.0
    return DataLoader(TensorDataset(real, torch.randn(32, 3, generator=generator)), batch_size=8)


def _plain_gan_loop(model: TinyGAN, toggles: bool) -> None:
    optimizer_g, optimizer_d = model.configure_optimizers()
    for real, noise in _gan_data():
        if toggles:
            model.discriminator.requires_grad_(False)
        gan_generator_loss(model.generator, model.discriminator, noise).backward()
        optimizer_g.step()
        optimizer_g.zero_grad()
        if toggles:
            model.discriminator.requires_grad_(True)
            model.generator.requires_grad_(False)
        gan_discriminator_loss(model.generator, model.discriminator, real, noise).backward()
        optimizer_d.step()
        optimizer_d.zero_grad()
        if toggles:
            model.generator.requires_grad_(True)


@pytest.mark.parametrize("toggles", [True, False])
def test_a_gan_with_toggling_trains_like_the_hand_written_loop(toggles):
    trained, reference = TinyGAN(toggles), TinyGAN(toggles)
    quiet_trainer(max_epochs=1).fit(trained, _gan_data())
    _plain_gan_loop(reference, toggles)
    for (name, value), expected in zip(trained.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(value, expected), name


def test_toggling_changes_what_the_gan_learns():
    """Without toggling the generator's loss leaves gradients on the discriminator, which its step then adds:
    a no-op toggle_optimizer would silently train another model."""
    toggled, untoggled = TinyGAN(True), TinyGAN(False)
    quiet_trainer(max_epochs=1).fit(toggled, _gan_data())
    quiet_trainer(max_epochs=1).fit(untoggled, _gan_data())
    assert not torch.equal(toggled.discriminator[0].weight, untoggled.discriminator[0].weight)
