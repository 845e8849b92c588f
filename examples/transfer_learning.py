"""Transfer learning: pretrain a feature extractor on digits 0-4, then reuse it for digits 5-9.

The pretrained child module is frozen at first (only the new head learns), then unfrozen and fine-tuned
with a tenth of the head's learning rate. Everything is trained here; nothing is downloaded.

    python examples/transfer_learning.py --data-dir ../shared/data/mnist --max-epochs 3
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Subset

import trellis
from example_setup import digit_splits, example_parser


def feature_extractor(in_features: int) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(in_features, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128),
                               torch.nn.ReLU())


class Classifier(trellis.Module):
    """A head of `classes` outputs on top of `features`; labels are shifted down by `first_digit`."""

    def __init__(self, features: torch.nn.Module, classes: int = 5, first_digit: int = 0, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters(ignore="features")
        self.features = features
        self.head = torch.nn.Linear(128, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    def training_step(self, batch, batch_idx):
        images, labels = batch
        loss = torch.nn.functional.cross_entropy(self(images), labels - self.hparams.first_digit)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        images, labels = batch
        predictions = self(images).argmax(dim=1) + self.hparams.first_digit
        self.log("val_acc", (predictions == labels).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.Adam([{"params": self.head.parameters(), "lr": self.hparams.lr},
                                 {"params": self.features.parameters(), "lr": self.hparams.lr / 10}])


class UnfreezeFeatures(trellis.Callback):
    """Keeps `module.features` frozen until epoch `unfreeze_at_epoch`, then lets it learn.

    Records how far the features moved while frozen (zero) and by the end of fine-tuning.
    """

    def __init__(self, unfreeze_at_epoch: int = 1) -> None:
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.shift_while_frozen = 0.0
        self.shift_after_fine_tuning = 0.0

    def on_fit_start(self, pl_module) -> None:
        self._start = [parameter.detach().clone() for parameter in pl_module.features.parameters()]
        pl_module.features.requires_grad_(False)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.unfreeze_at_epoch:
            self.shift_while_frozen = self._shift(pl_module)
            pl_module.features.requires_grad_(True)
            print(f"epoch {trainer.current_epoch}: features unfrozen for fine-tuning")

    def on_fit_end(self, pl_module) -> None:
        self.shift_after_fine_tuning = self._shift(pl_module)

    def _shift(self, pl_module) -> float:
        return sum(float((now.detach() - then).norm())
                   for now, then in zip(pl_module.features.parameters(), self._start))


def digits_between(dataset: Dataset, first: int, last: int) -> Subset:
    keep = [index for index in range(len(dataset)) if first <= int(dataset[index][1]) <= last]
    return Subset(dataset, keep)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = example_parser(__doc__, max_epochs=3, batch_size=64)
    parser.add_argument("--unfreeze-at-epoch", type=int, default=1)
    arguments = parser.parse_args(argv)
    trellis.seed_everything(42)
    train_set, validation_set, _, description = digit_splits(arguments.data_dir)
    in_features = train_set[0][0].numel()
    print(f"data: {description}")
    root = arguments.root_dir or "trellis_runs/transfer"
    limits = dict(max_epochs=arguments.max_epochs, limit_train_batches=arguments.limit_train_batches,
                  limit_val_batches=arguments.limit_val_batches)

    def loaders(first: int, last: int) -> tuple[DataLoader, DataLoader]:
        return (DataLoader(digits_between(train_set, first, last), batch_size=arguments.batch_size, shuffle=True),
                DataLoader(digits_between(validation_set, first, last), batch_size=256))

    source = Classifier(feature_extractor(in_features), classes=5, first_digit=0)
    pretrain = trellis.Trainer(**limits, default_root_dir=f"{root}/pretrain", enable_checkpointing=False)
    pretrain.fit(source, *loaders(0, 4))
    pretrained_accuracy = float(source.trainer.callback_metrics["val_acc"])
    print(f"pretrained on digits 0-4: validation accuracy {pretrained_accuracy:.4f}")

    target = Classifier(source.features, classes=5, first_digit=5)
    unfreeze = UnfreezeFeatures(arguments.unfreeze_at_epoch)
    trainer = trellis.Trainer(**limits, default_root_dir=f"{root}/finetune", callbacks=[unfreeze])
    trainer.fit(target, *loaders(5, 9))
    results = {"pretrain_val_acc": pretrained_accuracy, "val_acc": float(trainer.callback_metrics["val_acc"]),
               "shift_while_frozen": unfreeze.shift_while_frozen,
               "shift_after_fine_tuning": unfreeze.shift_after_fine_tuning}
    print(f"transferred to digits 5-9: validation accuracy {results['val_acc']:.4f}; features moved "
          f"{results['shift_while_frozen']:.3g} while frozen, {results['shift_after_fine_tuning']:.3g} in all")
    return results


if __name__ == "__main__":
    main()
