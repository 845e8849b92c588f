"""What TrellisCLI builds records its configuration as hyperparameters, and load_from_checkpoint rebuilds from it."""

from __future__ import annotations

import sys

import pytest
import torch
import yaml

import trellis
from trellis.cli import TrellisCLI
from trellis.errors import CheckpointError

pytestmark = pytest.mark.filterwarnings(r"ignore:seed_everything\(\) found no seed:UserWarning")

INSTANTIATOR = "trellis.config_cli.given_hparams.instantiate_module"


class Regressor(trellis.Module):
    """A regressor over a configurable encoder (an object the config gives by class_path)."""

    def __init__(self, encoder: torch.nn.Module, width: int = 3):
        super().__init__()
        self.save_hyperparameters()
        self.encoder = encoder
        self.head = torch.nn.Linear(width, 1)

    def training_step(self, batch, batch_idx):
        return self.head(self.encoder(batch)).pow(2).mean()

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.randn(8, 4, generator=torch.Generator().manual_seed(0)), batch_size=4)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class DeepRegressor(Regressor):
    def __init__(self, encoder: torch.nn.Module, width: int = 3, depth: int = 2):
        super().__init__(encoder, width)
        self.save_hyperparameters()


ENCODER = ["--model.encoder=torch.nn.Linear", "--model.encoder.in_features=4", "--model.encoder.out_features=3"]
TRAINER = {"max_steps": 2, "logger": False, "enable_progress_bar": False, "enable_model_summary": False}


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", ["train.py"])
    monkeypatch.chdir(tmp_path)


def trained_checkpoint(cli: TrellisCLI, tmp_path) -> str:
    cli.trainer.fit(cli.model)
    path = str(tmp_path / "model.ckpt")
    cli.trainer.save_checkpoint(path)
    return path


def test_the_config_is_saved_as_plain_hyperparameters_and_nested_objects_come_back_on_load(tmp_path):
    cli = TrellisCLI(Regressor, run=False, trainer_defaults=TRAINER, args=[*ENCODER, "--model.width=3"])
    hparams = dict(cli.model.hparams)
    assert hparams["encoder"]["class_path"] == "torch.nn.Linear"
    assert (hparams["encoder"]["init_args"]["in_features"], hparams["encoder"]["init_args"]["out_features"]) == (4, 3)
    assert (hparams["width"], hparams["_instantiator"]) == (3, INSTANTIATOR)
    assert yaml.safe_load(yaml.safe_dump(hparams)) == hparams  # plain data, as loggers' hparams.yaml holds it

    path = trained_checkpoint(cli, tmp_path)
    torch.load(path, weights_only=True)  # no object is pickled into the checkpoint
    loaded = Regressor.load_from_checkpoint(path)
    assert isinstance(loaded.encoder, torch.nn.Linear) and loaded.encoder.out_features == 3
    assert torch.equal(loaded.encoder.weight, cli.model.encoder.weight)
    assert dict(loaded.hparams) == hparams


def test_a_subclass_chosen_by_class_path_records_it_and_loads_as_that_subclass(tmp_path):
    cli = TrellisCLI(Regressor, subclass_mode_model=True, run=False, trainer_defaults=TRAINER, args=[
        f"--model={DeepRegressor.__module__}.DeepRegressor", "--model.depth=5",
        "--model.encoder=torch.nn.Linear", "--model.encoder.in_features=4", "--model.encoder.out_features=3"])
    assert type(cli.model) is DeepRegressor
    assert cli.model.hparams["_class_path"] == f"{DeepRegressor.__module__}.DeepRegressor"
    assert cli.model.hparams["depth"] == 5
    loaded = DeepRegressor.load_from_checkpoint(trained_checkpoint(cli, tmp_path))
    assert loaded.hparams["depth"] == 5 and torch.equal(loaded.head.weight, cli.model.head.weight)


def test_objects_built_outside_the_command_line_save_their_arguments_as_before():
    with pytest.warns(UserWarning, match="'encoder' is a torch.nn.Module"):
        model = Regressor(torch.nn.Linear(4, 3))
    assert isinstance(model.hparams["encoder"], torch.nn.Linear) and "_instantiator" not in model.hparams


def test_without_load_from_checkpoint_support_the_built_objects_are_the_hyperparameters():
    with pytest.warns(UserWarning, match="'encoder' is a torch.nn.Module"):
        cli = TrellisCLI(Regressor, run=False, load_from_checkpoint_support=False, trainer_defaults=TRAINER,
                         args=ENCODER)
    assert isinstance(cli.model.hparams["encoder"], torch.nn.Linear) and "_instantiator" not in cli.model.hparams


@pytest.mark.parametrize("instantiator", ["os.system", "builtins.eval"])
def test_a_checkpoint_naming_an_untrusted_instantiator_is_refused(tmp_path, instantiator):
    cli = TrellisCLI(Regressor, run=False, trainer_defaults=TRAINER, args=ENCODER)
    path = trained_checkpoint(cli, tmp_path)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["hyper_parameters"]["_instantiator"] = instantiator
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match=instantiator):
        Regressor.load_from_checkpoint(path)


def test_a_checkpoint_from_lightnings_cli_is_rebuilt_with_the_same_nested_objects(tmp_path):
    cli = TrellisCLI(Regressor, run=False, trainer_defaults=TRAINER, args=ENCODER)
    path = trained_checkpoint(cli, tmp_path)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["hyper_parameters"]["_instantiator"] = "lightning.pytorch.cli.instantiate_module"
    torch.save(checkpoint, path)
    loaded = Regressor.load_from_checkpoint(path)
    assert isinstance(loaded.encoder, torch.nn.Linear) and torch.equal(loaded.encoder.bias, cli.model.encoder.bias)
