"""TrellisCLI's constructor options and parser helpers, exercised in this process (run=False, args=...)."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch

import trellis
from trellis.cli import (
    LightningCLI,
    OptimizerCallable,
    ReduceLROnPlateau,
    SaveConfigCallback,
    TrellisArgumentParser,
    TrellisCLI,
    instantiate_class,
)
from trellis.errors import ConfigurationError

# seed_everything_default=True seeds 0 with a warning that no seed was given, as LightningCLI does
pytestmark = pytest.mark.filterwarnings(r"ignore:seed_everything\(\) found no seed:UserWarning")


class Net(trellis.Module):
    def __init__(self, in_features: int = 4, lr: float = 0.1, optimizer: OptimizerCallable = torch.optim.SGD):
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer"])
        self.optimizer = optimizer
        self.layer = torch.nn.Linear(in_features, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).sum()

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.randn(4, self.hparams.in_features), batch_size=2)

    def configure_optimizers(self):
        return self.optimizer(self.parameters())


class Features(trellis.DataModule):
    def __init__(self, num_features: int = 4):
        super().__init__()
        self.num_features = num_features


QUIET = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False, "enable_checkpointing": False}


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", ["train.py"])
    monkeypatch.chdir(tmp_path)


def test_lightning_cli_is_trellis_cli():
    assert LightningCLI is TrellisCLI


def test_args_as_a_dict_and_trainer_defaults_under_flags():
    cli = TrellisCLI(Net, run=False, trainer_defaults={"max_epochs": 7, **QUIET}, args={"model": {"lr": 0.3}})
    assert cli.model.hparams.lr == 0.3 and cli.trainer.max_epochs == 7 and cli.datamodule is None
    cli = TrellisCLI(Net, run=False, trainer_defaults={"max_epochs": 7}, args=["--trainer.max_epochs=2"])
    assert cli.trainer.max_epochs == 2 and cli.config["trainer"]["max_epochs"] == 2


def test_args_and_a_command_line_together_warn(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train.py", "--model.lr=1"])
    with pytest.warns(UserWarning, match="both args= and command-line arguments"):
        cli = TrellisCLI(Net, run=False, args=["--model.lr=2"])
    assert cli.model.hparams.lr == 2


def test_omegaconf_interpolation_with_parser_mode(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(textwrap.dedent("""
        data: {num_features: 6}
        model: {in_features: "${data.num_features}"}
    """))
    cli = TrellisCLI(Net, Features, run=False, parser_kwargs={"parser_mode": "omegaconf"},
                     args=["--config", str(config)])
    assert cli.model.hparams.in_features == 6 and cli.model.layer.in_features == 6


def test_an_optimizer_callable_argument_is_filled_from_the_command_line():
    cli = TrellisCLI(Net, run=False, args=["--model.optimizer=Adam", "--model.optimizer.lr=0.01"])
    optimizer = cli.model.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.param_groups[0]["lr"] == 0.01


def test_reduce_lr_on_plateau_from_the_command_line_names_its_metric():
    with pytest.warns(UserWarning, match="configure_optimizers` will be overridden"):
        cli = TrellisCLI(Net, run=False, args=["--optimizer=SGD", "--optimizer.lr=0.5",
                                               "--lr_scheduler=trellis.cli.ReduceLROnPlateau",
                                               "--lr_scheduler.monitor=val_loss"])
    configured = cli.model.configure_optimizers()
    assert isinstance(configured["optimizer"], torch.optim.SGD)
    assert isinstance(configured["lr_scheduler"]["scheduler"], ReduceLROnPlateau)
    assert configured["lr_scheduler"]["monitor"] == "val_loss"


def test_no_optimizer_given_keeps_the_modules_own_configure_optimizers():
    cli = TrellisCLI(Net, run=False, args=[], auto_configure_optimizers=True)
    assert isinstance(cli.model.configure_optimizers(), torch.optim.SGD)
    assert "optimizer" not in TrellisCLI(Net, run=False, args=[], auto_configure_optimizers=False).config


def test_save_config_callback_none_and_fast_dev_run_save_nothing():
    without = TrellisCLI(Net, run=False, save_config_callback=None, args=[])
    assert not any(isinstance(callback, SaveConfigCallback) for callback in without.trainer.callbacks)
    quick = TrellisCLI(Net, run=False, args=["--trainer.fast_dev_run=true"])
    assert not any(isinstance(callback, SaveConfigCallback) for callback in quick.trainer.callbacks)


def test_save_config_elsewhere_runs_once_on_rank_zero(tmp_path):
    saved = []

    class SaveToList(SaveConfigCallback):
        def save_config(self, trainer, pl_module, stage):
            saved.append((stage, self.parser.dump(self.config)))

    cli = TrellisCLI(Net, run=False, save_config_callback=SaveToList, save_config_kwargs={"save_to_log_dir": False},
                     trainer_defaults={"max_epochs": 1, **QUIET}, args=["--model.lr=0.25"])
    cli.trainer.fit(cli.model)
    cli.trainer.fit(cli.model)
    assert len(saved) == 1 and saved[0][0] == "fit" and "lr: 0.25" in saved[0][1]
    assert not (tmp_path / "config.yaml").exists()
    with pytest.raises(ConfigurationError, match="implement save_config"):
        TrellisCLI(Net, run=False, save_config_kwargs={"save_to_log_dir": False}, args=[])


def test_parser_refuses_classes_that_are_not_trellis_components():
    parser = TrellisArgumentParser()
    with pytest.raises(ConfigurationError, match="subclass of Trainer, Module, DataModule or Callback"):
        parser.add_trellis_class_args(torch.nn.Linear, "linear")
    with pytest.raises(ConfigurationError, match="not a torch.optim.Optimizer"):
        parser.add_optimizer_args(torch.nn.Linear)


def test_instantiate_class_builds_from_a_class_path():
    parameters = [torch.nn.Parameter(torch.zeros(2))]
    optimizer = instantiate_class(parameters, {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.5}})
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.param_groups[0]["lr"] == 0.5
