"""A two-hidden-layer residual MLP trained with plain SGD (lr=1e-2, batch 32, 5 epochs).

On the full MNIST (seeded 55000/5000 split) it reaches a validation accuracy of at least 0.93, like the
same network trained by a hand-written PyTorch loop.

    python examples/residual_mlp.py --data-dir ../shared/data/mnist
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

import trellis
from example_setup import digit_splits, example_parser


class ResidualBlock(torch.nn.Module):
    """x + ReLU(Linear(x)): one hidden layer with a skip connection."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(self.linear(x))


class ResidualMLP(trellis.Module):
    def __init__(self, in_features: int = 784, width: int = 256, lr: float = 1e-2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.stem = torch.nn.Linear(in_features, width)
        self.hidden = torch.nn.Sequential(ResidualBlock(width), ResidualBlock(width))
        self.head = torch.nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(torch.relu(self.stem(x))))

    def training_step(self, batch, batch_idx):
        images, labels = batch
        loss = torch.nn.functional.cross_entropy(self(images), labels)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        images, labels = batch
        logits = self(images)
        self.log("val_loss", torch.nn.functional.cross_entropy(logits, labels))
        self.log("val_acc", (logits.argmax(dim=1) == labels).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def main(argv: list[str] | None = None) -> dict[str, float]:
    arguments = example_parser(__doc__, max_epochs=5, batch_size=32).parse_args(argv)
    trellis.seed_everything(42)
    train_set, validation_set, _, description = digit_splits(arguments.data_dir)
    print(f"data: {description}; {len(train_set)} train, {len(validation_set)} validation")
    model = ResidualMLP(in_features=train_set[0][0].numel())
    trainer = trellis.Trainer(
        max_epochs=arguments.max_epochs, limit_train_batches=arguments.limit_train_batches,
        limit_val_batches=arguments.limit_val_batches, default_root_dir=arguments.root_dir or "trellis_runs/residual",
    )
    trainer.fit(model, DataLoader(train_set, batch_size=arguments.batch_size, shuffle=True),
                DataLoader(validation_set, batch_size=256))
    results = {name: float(value) for name, value in trainer.callback_metrics.items()}
    print(f"validation accuracy {results['val_acc']:.4f} after {trainer.current_epoch} epochs")
    return results


if __name__ == "__main__":
    main()
