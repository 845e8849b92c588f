"""save_hyperparameters as in Lightning 2.6: which arguments are saved, how they reach checkpoints and loggers,
and the classic `self.hparams = hparams` form rebuilt by load_from_checkpoint."""

from __future__ import annotations

import argparse
import copy
import inspect

import pytest
import torch

import trellis
from support import loader, quiet_trainer
from trellis.errors import ConfigurationError
from trellis.plugin import Logger
from trellis.utilities import AttributeDict


class Regressor(trellis.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(8, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_without_names_every_init_argument_is_saved_and_kwargs_are_spread():
    class Model(Regressor):
        def __init__(self, a, b=2, *args, c=3, **kwargs):
            super().__init__()
            self.save_hyperparameters()

    model = Model(1, 5, 6, 7, c=4, d=9)
    assert model.hparams == {"a": 1, "b": 5, "c": 4, "d": 9}  # *args are not saved
    assert isinstance(model.hparams, AttributeDict) and model.hparams.d == 9
    assert model._hparams_name == "kwargs"


def test_names_select_arguments_and_ignore_leaves_them_out():
    class Model(Regressor):
        def __init__(self, a, b, c=3, selected=("a", "c"), ignore=None):
            super().__init__()
            if ignore is None:
                self.save_hyperparameters(*selected)
            else:
                self.save_hyperparameters(ignore=ignore)

    assert Model(1, 2).hparams == {"a": 1, "c": 3}
    assert Model(1, 2, ignore="b").hparams == {"a": 1, "c": 3, "selected": ("a", "c"), "ignore": "b"}
    assert Model(1, 2, ignore=["a", "b", "selected", "ignore"]).hparams == {"c": 3}
    with pytest.raises(ValueError, match="'missing'.*not an argument of Model.__init__"):
        Model(1, 2, selected=("missing",))


@pytest.mark.parametrize("given", [argparse.Namespace(lr=0.1, layers=3), {"lr": 0.1, "layers": 3}])
def test_one_namespace_or_dict_argument_becomes_the_hyperparameters(given):
    class Model(Regressor):
        def __init__(self, config):
            super().__init__()
            self.save_hyperparameters(config)

    model = Model(given)
    assert model.hparams == {"lr": 0.1, "layers": 3} and model.hparams.layers == 3
    assert model._hparams_name == "config"


def test_a_subclass_s_arguments_are_saved_by_the_base_class_and_win_over_its_own():
    class Base(Regressor):
        def __init__(self, x, y=1, z=0):
            super().__init__()
            self.save_hyperparameters(ignore="y")

    class Child(Base):
        def __init__(self, w, x=5, **kwargs):
            super().__init__(x=x + 1, z=x * 10, **kwargs)
            self.extra = w

    model = Child(7, y=3)
    assert model.hparams == {"w": 7, "x": 5, "z": 50}


def test_save_hyperparameters_from_a_helper_and_with_an_explicit_frame():
    class Model(Regressor):
        def __init__(self, units=4, depth=2):
            super().__init__()
            self._save()

        def _save(self):  # called from __init__: the arguments are found further up
            self.save_hyperparameters("units")

    assert Model(8).hparams == {"units": 8}

    class Explicit(Regressor):
        def __init__(self, units=4):
            super().__init__()
            frame = inspect.currentframe()
            units = units * 2  # the argument's value when save_hyperparameters reads the frame
            self.save_hyperparameters(frame=frame)

    assert Explicit(3).hparams == {"units": 6}


def test_several_calls_accumulate_and_an_empty_container_saves_nothing():
    class Model(Regressor):
        def __init__(self, a=1, b=2):
            super().__init__()
            self.save_hyperparameters("a")
            self.save_hyperparameters("b")
            self.save_hyperparameters({})

    model = Model()
    assert model.hparams == {"a": 1, "b": 2} and model.hparams_initial == {"a": 1, "b": 2}


def test_hparams_initial_is_a_copy_of_what_was_saved():
    class Model(Regressor):
        def __init__(self, sizes=(4, 4), options=None):
            super().__init__()
            self.save_hyperparameters()

    options = {"dropout": 0.1}
    model = Model(options=options)
    options["dropout"] = 0.9  # the caller's object changes later
    model.hparams.sizes = (8,)
    model.hparams_initial["sizes"] = "changed through the copy"
    assert model.hparams_initial == {"sizes": (4, 4), "options": {"dropout": 0.1}}
    assert model.hparams.sizes == (8,)


def test_a_module_argument_is_saved_with_a_warning_to_ignore_it():
    class Model(Regressor):
        def __init__(self, backbone, lr=0.1):
            super().__init__()
            self.save_hyperparameters()

    with pytest.warns(UserWarning, match=r"'backbone' is a torch.nn.Module.*ignore=\['backbone'\]"):
        model = Model(torch.nn.Linear(1, 1))
    assert set(model.hparams) == {"backbone", "lr"}


def test_the_datamodule_saves_its_own_under_its_keys():
    class Data(trellis.DataModule):
        def __init__(self, batch_size=32, root="data"):
            super().__init__()
            self.save_hyperparameters()

    data = Data(16)
    assert data.hparams == {"batch_size": 16, "root": "data"}
    assert (Data.CHECKPOINT_HYPER_PARAMS_KEY, Data.CHECKPOINT_HYPER_PARAMS_NAME, Data.CHECKPOINT_HYPER_PARAMS_TYPE) == (
        "datamodule_hyper_parameters", "datamodule_hparams_name", "datamodule_hparams_type")
    assert (trellis.Module.CHECKPOINT_HYPER_PARAMS_KEY, trellis.Module.CHECKPOINT_HYPER_PARAMS_NAME,
            trellis.Module.CHECKPOINT_HYPER_PARAMS_TYPE) == ("hyper_parameters", "hparams_name", "hparams_type")


class RecordingLogger(Logger):
    name = "recording"

    def __init__(self) -> None:
        self.hyperparameters: list[dict] = []

    def log_hyperparams(self, params):
        self.hyperparameters.append(copy.deepcopy(dict(params)))

    def log_metrics(self, metrics, step):
        pass


class Tuned(Regressor):
    def __init__(self, lr=0.1, depth=2, send=True):
        super().__init__()
        self.save_hyperparameters(logger=send)

    def training_step(self, batch, batch_idx):
        self.hparams.lr = 0.5  # changed during training: checkpoints hold the change, loggers the initial value
        return super().training_step(batch, batch_idx)


class SizedData(trellis.DataModule):
    def __init__(self, batch_size=32, lr=0.1, send=True):
        super().__init__()
        self.save_hyperparameters(logger=send)

    def train_dataloader(self):
        return loader(64, self.hparams.batch_size)


def _fit(model, data, tmp_path):
    recorder = RecordingLogger()
    trainer = quiet_trainer(max_epochs=1, logger=recorder, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=data)
    return recorder.hyperparameters, trainer


def test_loggers_get_the_module_s_and_datamodule_s_initial_hyperparameters_merged(tmp_path):
    logged, trainer = _fit(Tuned(), SizedData(16), tmp_path)
    assert logged == [{"lr": 0.1, "depth": 2, "send": True, "batch_size": 16}]
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"] == {"lr": 0.5, "depth": 2, "send": True}
    assert checkpoint["hparams_name"] == "kwargs"
    assert checkpoint["datamodule_hyper_parameters"] == {"batch_size": 16, "lr": 0.1, "send": True}
    assert checkpoint["datamodule_hparams_name"] == "kwargs"


def test_logger_false_keeps_hyperparameters_out_of_the_loggers_only(tmp_path):
    assert _fit(Tuned(send=False), SizedData(16), tmp_path)[0] == [{"batch_size": 16, "lr": 0.1, "send": True}]
    assert _fit(Tuned(send=False), SizedData(16, send=False), tmp_path)[0] == []

    class Plain(Regressor):  # no save_hyperparameters: nothing to log
        pass

    assert _fit(Plain(), SizedData(16, send=False), tmp_path)[0] == []


def test_the_module_and_datamodule_saving_one_name_with_two_values_is_an_error(tmp_path):
    with pytest.raises(ConfigurationError, match=r"\['lr'\] with different values"):
        _fit(Tuned(lr=0.1), SizedData(16, lr=0.2), tmp_path)
    assert _fit(Tuned(lr=0.2), SizedData(16, lr=0.2), tmp_path)[0] == [
        {"lr": 0.2, "depth": 2, "send": True, "batch_size": 16}]


class Classic(Regressor):
    """The classic form of Lightning 0.x-1.x tutorials: the argparse Namespace becomes self.hparams."""

    def __init__(self, hparams):
        super().__init__()
        self.hparams = hparams
        self.layer = torch.nn.Linear(8, hparams.units if isinstance(hparams, argparse.Namespace) else hparams["units"])
        self.head = torch.nn.Linear(self.layer.out_features, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.head(self.layer(x)), y)


@pytest.mark.parametrize("given", [argparse.Namespace(units=5, lr=0.1), {"units": 5, "lr": 0.1}])
def test_classic_hparams_assignment_is_rebuilt_by_load_from_checkpoint_with_the_same_kind(tmp_path, given):
    model = Classic(given)
    assert model.hparams == {"units": 5, "lr": 0.1} and model.hparams.units == 5
    assert model._log_hyperparams
    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(model, loader(64))
    trainer.save_checkpoint(tmp_path / "model.ckpt")

    restored = Classic.load_from_checkpoint(tmp_path / "model.ckpt")
    assert restored.hparams == {"units": 5, "lr": 0.1}
    assert restored.layer.out_features == 5
    assert torch.equal(restored.head.weight, model.head.weight)
    checkpoint = torch.load(tmp_path / "model.ckpt", weights_only=True)
    assert checkpoint["hparams_name"] == "hparams"
    assert checkpoint.get("hparams_type") == ("Namespace" if isinstance(given, argparse.Namespace) else None)

    seen = []

    class Recording(Classic):
        def __init__(self, hparams):
            seen.append(hparams)
            super().__init__(hparams)

    Recording.load_from_checkpoint(tmp_path / "model.ckpt", lr=0.5)
    assert type(seen[0]) is type(given)
    assert (seen[0].lr if isinstance(given, argparse.Namespace) else seen[0]["lr"]) == 0.5
