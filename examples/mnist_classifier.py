"""Train a 3-layer MLP digit classifier (log-softmax + NLL) with Trellis.

    python examples/mnist_classifier.py                      # bundled digits, no download
    python examples/mnist_classifier.py --data-dir DIR       # real MNIST (or set TRELLIS_MNIST_DIR)
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.data import DataLoader, random_split

import trellis
from digits_data import load_digits_splits


class DigitClassifier(trellis.Module):
    def __init__(self, in_features: int = 784, hidden: int = 128, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(in_features, hidden), torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden // 2), torch.nn.ReLU(),
            torch.nn.Linear(hidden // 2, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.layers(x), dim=1)

    def training_step(self, batch, batch_idx):
        images, labels = batch
        loss = torch.nn.functional.nll_loss(self(images), labels)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def _evaluate(self, batch, stage: str) -> None:
        images, labels = batch
        log_probabilities = self(images)
        self.log(f"{stage}_loss", torch.nn.functional.nll_loss(log_probabilities, labels))
        self.log(f"{stage}_acc", (log_probabilities.argmax(dim=1) == labels).float().mean(), prog_bar=True)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="directory with the four MNIST .gz files (default: bundled digits)")
    parser.add_argument("--max-epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--limit-train-batches", type=float, default=1.0)
    parser.add_argument("--root-dir", default="trellis_runs/mnist")
    arguments = parser.parse_args(argv)

    trellis.seed_everything(42)
    train_set, test_set, description = load_digits_splits(arguments.data_dir)
    validation_size = max(1, len(train_set) // 12)
    train_set, validation_set = random_split(
        train_set, [len(train_set) - validation_size, validation_size], generator=torch.Generator().manual_seed(42)
    )
    print(f"data: {description}; {len(train_set)} train, {len(validation_set)} validation, {len(test_set)} test")
    model = DigitClassifier(in_features=train_set[0][0].numel())
    limit = arguments.limit_train_batches
    trainer = trellis.Trainer(max_epochs=arguments.max_epochs, default_root_dir=arguments.root_dir,
                              limit_train_batches=int(limit) if limit > 1 else limit)
    trainer.fit(model, DataLoader(train_set, batch_size=arguments.batch_size, shuffle=True),
                DataLoader(validation_set, batch_size=256))
    results = trainer.test(dataloaders=DataLoader(test_set, batch_size=256))[0]
    print(f"test accuracy {results['test_acc']:.4f} (best checkpoint {trainer.checkpoint_callback.best_model_path})")
    return results


if __name__ == "__main__":
    main()
