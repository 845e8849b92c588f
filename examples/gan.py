"""A GAN on digits with two optimizers, stepped by hand (manual optimization).

    python examples/gan.py --data-dir ../shared/data/mnist --max-epochs 5
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

import trellis
from example_setup import digit_splits, example_parser


class GAN(trellis.Module):
    def __init__(self, in_features: int = 784, noise_size: int = 32, lr: float = 2e-4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator = torch.nn.Sequential(
            torch.nn.Linear(noise_size, 128), torch.nn.LeakyReLU(0.2),
            torch.nn.Linear(128, 256), torch.nn.LeakyReLU(0.2),
            torch.nn.Linear(256, in_features), torch.nn.Sigmoid(),
        )
        self.discriminator = torch.nn.Sequential(
            torch.nn.Linear(in_features, 256), torch.nn.LeakyReLU(0.2),
            torch.nn.Linear(256, 1),
        )

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return self.generator(noise)

    def noise(self, count: int) -> torch.Tensor:
        return torch.randn(count, self.hparams.noise_size, device=self.device)

    def training_step(self, batch, batch_idx):
        real, _ = batch
        generator_optimizer, discriminator_optimizer = self.optimizers()
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        ones = torch.ones(len(real), 1, device=self.device)
        zeros = torch.zeros(len(real), 1, device=self.device)

        fake = self(self.noise(len(real)))
        discriminator_loss = (bce(self.discriminator(real), ones) + bce(self.discriminator(fake.detach()), zeros)) / 2
        discriminator_optimizer.zero_grad()
        self.manual_backward(discriminator_loss)
        discriminator_optimizer.step()

        generator_loss = bce(self.discriminator(fake), ones)  # the generator wants fakes called real
        generator_optimizer.zero_grad()
        self.manual_backward(generator_loss)
        generator_optimizer.step()

        self.log_dict({"d_loss": discriminator_loss, "g_loss": generator_loss}, prog_bar=True)

    def validation_step(self, batch, batch_idx):
        real, _ = batch
        fake = self(self.noise(len(real)))
        self.log("val_d_real", torch.sigmoid(self.discriminator(real)).mean())
        self.log("val_d_fake", torch.sigmoid(self.discriminator(fake)).mean())

    def configure_optimizers(self):
        betas = (0.5, 0.999)
        return [torch.optim.Adam(self.generator.parameters(), lr=self.hparams.lr, betas=betas),
                torch.optim.Adam(self.discriminator.parameters(), lr=self.hparams.lr, betas=betas)]


def main(argv: list[str] | None = None) -> dict[str, float]:
    arguments = example_parser(__doc__, max_epochs=5, batch_size=64).parse_args(argv)
    trellis.seed_everything(42)
    train_set, validation_set, _, description = digit_splits(arguments.data_dir)
    print(f"data: {description}; {len(train_set)} train, {len(validation_set)} validation")
    model = GAN(in_features=train_set[0][0].numel())
    trainer = trellis.Trainer(
        max_epochs=arguments.max_epochs, limit_train_batches=arguments.limit_train_batches,
        limit_val_batches=arguments.limit_val_batches, default_root_dir=arguments.root_dir or "trellis_runs/gan",
    )
    trainer.fit(model, DataLoader(train_set, batch_size=arguments.batch_size, shuffle=True, drop_last=True),
                DataLoader(validation_set, batch_size=256))
    results = {name: float(value) for name, value in trainer.callback_metrics.items()}
    results["global_step"] = trainer.global_step
    print(f"discriminator on real {results['val_d_real']:.3f}, on generated {results['val_d_fake']:.3f}; "
          f"{trainer.global_step} optimizer steps")
    return results


if __name__ == "__main__":
    main()
