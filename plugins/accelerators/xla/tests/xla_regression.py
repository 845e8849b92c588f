"""A small regression model and its data, shared by the XLA tests."""

from __future__ import annotations

import torch

import trellis


class Regression(trellis.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        self.losses: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        features, target = batch
        loss = torch.nn.functional.mse_loss(self.net(features), target)
        self.losses.append(loss.detach())
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)


def regression_loader(samples: int = 256, shuffle: bool = True) -> torch.utils.data.DataLoader:
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(samples, 8, generator=generator)
    target = features @ torch.linspace(-1.0, 1.0, 8).unsqueeze(1)
    dataset = torch.utils.data.TensorDataset(features, target)
    # The order comes from the global RNG (seeded by train): XLA's device loader reads a loader to its end in its
    # own thread, which with an explicit generator= draws one more permutation per epoch than the CPU loop,
    # which, as Lightning's, stops after the epoch's last batch.
    return torch.utils.data.DataLoader(dataset, batch_size=32, shuffle=shuffle)


def train(accelerator, root, max_epochs: int = 3, **flags) -> tuple[Regression, trellis.Trainer]:
    trellis.seed_everything(0)
    module = Regression()
    flags.setdefault("devices", 1)  # one device even where CPU_NUM_DEVICES shows XLA several
    trainer = trellis.Trainer(accelerator=accelerator, max_epochs=max_epochs, logger=False, enable_progress_bar=False,
                              enable_model_summary=False, enable_checkpointing=False, default_root_dir=root, **flags)
    trainer.fit(module, regression_loader())
    return module, trainer
