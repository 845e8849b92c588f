"""An autoencoder that squeezes each digit through a 32-number code and rebuilds it.

    python examples/autoencoder.py --data-dir ../shared/data/mnist --max-epochs 5
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

import trellis
from example_setup import digit_splits, example_parser


class AutoEncoder(trellis.Module):
    def __init__(self, in_features: int = 784, code_size: int = 32, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder = torch.nn.Sequential(torch.nn.Linear(in_features, 128), torch.nn.ReLU(),
                                           torch.nn.Linear(128, code_size))
        self.decoder = torch.nn.Sequential(torch.nn.Linear(code_size, 128), torch.nn.ReLU(),
                                           torch.nn.Linear(128, in_features))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The code of each image (what the encoder learned)."""
        return self.encoder(images)

    def _reconstruction_loss(self, batch) -> torch.Tensor:
        images, _ = batch
        return torch.nn.functional.mse_loss(self.decoder(self.encoder(images)), images)

    def training_step(self, batch, batch_idx):
        loss = self._reconstruction_loss(batch)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        images, _ = batch
        self.log("val_loss", self._reconstruction_loss(batch), prog_bar=True)
        # the loss of always answering the mean image: a reconstruction should beat it
        self.log("val_baseline_loss", images.var(dim=0, unbiased=False).mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def main(argv: list[str] | None = None) -> dict[str, float]:
    arguments = example_parser(__doc__, max_epochs=5, batch_size=64).parse_args(argv)
    trellis.seed_everything(42)
    train_set, validation_set, _, description = digit_splits(arguments.data_dir)
    print(f"data: {description}; {len(train_set)} train, {len(validation_set)} validation")
    model = AutoEncoder(in_features=train_set[0][0].numel())
    trainer = trellis.Trainer(
        max_epochs=arguments.max_epochs, limit_train_batches=arguments.limit_train_batches,
        limit_val_batches=arguments.limit_val_batches,
        default_root_dir=arguments.root_dir or "trellis_runs/autoencoder",
    )
    trainer.fit(model, DataLoader(train_set, batch_size=arguments.batch_size, shuffle=True),
                DataLoader(validation_set, batch_size=256))
    results = {name: float(value) for name, value in trainer.callback_metrics.items()}
    print(f"validation reconstruction loss {results['val_loss']:.4f} "
          f"(answering the mean image: {results['val_baseline_loss']:.4f})")
    return results


if __name__ == "__main__":
    main()
