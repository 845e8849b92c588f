"""One training run on XLA's CPU device, as a script of its own: SPMD mode is per process, so each test run
starts one (`CPU_NUM_DEVICES` chooses how many devices XLA shows it). Writes what the tests compare to --out."""

from __future__ import annotations

import argparse
import os
import runpy
import signal
from pathlib import Path

import torch

import trellis
from trellis.callbacks import ModelCheckpoint

helpers = runpy.run_path(str(Path(__file__).with_name("xla_regression.py")))


def sharding(tensor: torch.Tensor) -> str:
    """XLA's sharding annotation of a device tensor: "{devices=[4,1]0,1,2,3}" when split over 4 devices."""
    if tensor.device.type != "xla":
        return ""
    import torch_xla

    return torch_xla._XLAC._get_xla_sharding_spec(tensor)


class ValidatedRegression(helpers["Regression"]):
    """The regression model with a validation step; records its validation losses and how its first training
    batch was placed on the devices."""

    def __init__(self) -> None:
        super().__init__()
        self.batch_sharding = None
        self.val_losses: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        if self.batch_sharding is None:
            self.batch_sharding = [sharding(tensor) for tensor in batch]
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        features, target = batch
        loss = torch.nn.functional.mse_loss(self.net(features), target)
        self.val_losses.append(loss.detach())
        self.log("val_loss", loss)


class KillAtStep(trellis.Callback):
    """SIGKILL this process once training has finished `step` optimizer steps (a machine lost mid-run)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--accelerator", default="xla")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--strategy", default="auto")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--checkpoint-every", type=int, default=0, help="steps between last.ckpt saves")
    parser.add_argument("--kill-at-step", type=int, default=0)
    parser.add_argument("--resume", help="the checkpoint to resume from")
    arguments = parser.parse_args()

    callbacks: list[trellis.Callback] = []
    if arguments.checkpoint_every:
        callbacks.append(ModelCheckpoint(dirpath=Path(arguments.root) / "checkpoints", save_top_k=0,
                                                 save_last=True, every_n_train_steps=arguments.checkpoint_every))
    if arguments.kill_at_step:
        callbacks.append(KillAtStep(arguments.kill_at_step))
    trellis.seed_everything(0)
    module = ValidatedRegression()
    trainer = trellis.Trainer(accelerator=arguments.accelerator, devices=arguments.devices,
                              strategy=arguments.strategy, max_epochs=arguments.epochs, callbacks=callbacks,
                              enable_checkpointing=bool(arguments.checkpoint_every), default_root_dir=arguments.root,
                              logger=False, enable_progress_bar=False, enable_model_summary=False,
                              num_sanity_val_steps=0)
    # 250 samples in batches of 32: the last batch (26) does not split evenly over 4 devices
    trainer.fit(module, helpers["regression_loader"](250), helpers["regression_loader"](64, shuffle=False),
                ckpt_path=arguments.resume)

    torch.save({
        "devices": trainer.strategy.devices,
        "global_step": trainer.global_step,
        "losses": [float(loss) for loss in module.losses],
        "val_losses": [float(loss) for loss in module.val_losses],
        "batch_sharding": module.batch_sharding,
        "weight_sharding": {name: sharding(parameter) for name, parameter in module.named_parameters()},
        "optimizer_sharding": [sharding(value) for state in trainer.optimizers[0].state.values()
                               for value in state.values() if value.device.type == "xla"],
        "state_dict": {name: tensor.cpu() for name, tensor in module.state_dict().items()},
    }, arguments.out)


if __name__ == "__main__":
    main()
