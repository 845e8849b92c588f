"""A small regression network and its data, for comparing what the Trainer does with a hand-written loop."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

import trellis
from support import quiet_trainer

EPOCHS = 2


def data(samples: int = 32, batch_size: int = 4) -> DataLoader:
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(samples, 6, generator=generator)
    return DataLoader(TensorDataset(x, x @ torch.randn(6, 1, generator=generator)), batch_size=batch_size)


class Net(trellis.Module):
    """A small regression network built the same way each time; subclasses override one loop step."""

    lr = 0.05

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))

    def forward(self, x):
        return self.net(x)

    def loss(self, batch):
        x, y = batch
        return torch.nn.functional.mse_loss(self(x), y)

    def training_step(self, batch, batch_idx):
        return self.loss(batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def fit(module: Net, **flags) -> trellis.Trainer:
    trainer = quiet_trainer(max_epochs=EPOCHS, **flags)
    trainer.fit(module, data())
    return trainer


def assert_same_weights(trained: torch.nn.Module, reference: torch.nn.Module) -> None:
    for (name, value), expected in zip(trained.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(value, expected, rtol=0, atol=0, msg=name)
