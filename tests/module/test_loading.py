"""load_from_checkpoint as Lightning 2.6 has it (Module and DataModule), and checkpoints that do not fit."""

from __future__ import annotations

import io
import pickle

import pytest
import torch

import trellis
from support import loader, quiet_trainer
from trellis.errors import CheckpointError, CheckpointMismatchError, ConfigurationError
from trellis.module_loading import _saved_device_if_available


class Sized(trellis.Module):
    def __init__(self, width: int = 4, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.body = torch.nn.Linear(8, width)
        self.head = torch.nn.Linear(width, 1)

    def forward(self, x):
        return self.head(torch.tanh(self.body(x)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self(x), y)

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_loss", torch.nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


@pytest.fixture
def checkpoint(tmp_path):
    model = Sized(width=6)
    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(model, loader(64))
    path = tmp_path / "sized.ckpt"
    trainer.save_checkpoint(path)
    return path, model


def test_the_module_is_rebuilt_with_its_hyperparameters_and_weights(checkpoint):
    path, trained = checkpoint
    restored = Sized.load_from_checkpoint(path)
    assert restored.hparams == {"width": 6, "lr": 0.1}
    for name, value in trained.state_dict().items():
        assert torch.equal(restored.state_dict()[name], value), name
    assert restored.device == torch.device("cpu") and restored.training


def test_keyword_arguments_override_saved_hyperparameters_and_unknown_ones_are_dropped(checkpoint):
    path, _ = checkpoint
    restored = Sized.load_from_checkpoint(path, lr=0.5, unknown=1)
    assert restored.hparams == {"width": 6, "lr": 0.5}


@pytest.mark.parametrize("suffix, text", [
    (".yaml", "width: 6\nlr: 0.25\n"),
    (".csv", "key,value\nwidth,6\nlr,0.25\n"),
])
def test_an_hparams_file_replaces_the_saved_hyperparameters(checkpoint, tmp_path, suffix, text):
    path, _ = checkpoint
    hparams_file = tmp_path / f"hparams{suffix}"
    hparams_file.write_text(text)
    assert Sized.load_from_checkpoint(path, hparams_file=hparams_file).hparams == {"width": 6, "lr": 0.25}
    with pytest.raises(ConfigurationError, match=r"\.yaml, \.yml or \.csv"):
        Sized.load_from_checkpoint(path, hparams_file=tmp_path / "hparams.json")


def test_weights_of_another_shape_raise_a_mismatch_error_naming_the_file_and_the_fix(checkpoint):
    path, _ = checkpoint
    with pytest.raises(CheckpointMismatchError, match=r"does not fit Sized: size mismatch for body.weight") as caught:
        Sized.load_from_checkpoint(path, width=3)
    assert str(path) in str(caught.value) and isinstance(caught.value, RuntimeError)


def test_a_trainer_loading_weights_of_another_shape_raises_the_mismatch_error(checkpoint):
    path, _ = checkpoint
    with pytest.raises(CheckpointMismatchError, match=r"does not fit Sized: size mismatch"):
        quiet_trainer().test(Sized(width=3), loader(64), ckpt_path=path, verbose=False)
    with pytest.raises(CheckpointMismatchError, match=str(path)):
        quiet_trainer(max_epochs=2).fit(Sized(width=3), loader(64), ckpt_path=path)


class Extended(Sized):
    """Sized with one more layer than its checkpoints hold."""

    def __init__(self, width: int = 4, lr: float = 0.1) -> None:
        super().__init__(width, lr)
        self.extra = torch.nn.Linear(1, 1)


class NotStrict(Extended):
    def __init__(self, width: int = 4, lr: float = 0.1) -> None:
        super().__init__(width, lr)
        self.strict_loading = False


def test_strict_loading_refuses_missing_weights_unless_turned_off(checkpoint):
    path, trained = checkpoint
    with pytest.raises(CheckpointMismatchError, match="Missing key"):
        Extended.load_from_checkpoint(path)
    with pytest.warns(UserWarning, match=r"does not hold, left as initialised: \['extra.weight', 'extra.bias'\]"):
        relaxed = Extended.load_from_checkpoint(path, strict=False)
    assert torch.equal(relaxed.head.weight, trained.head.weight)
    with pytest.warns(UserWarning, match="left as initialised"):
        NotStrict.load_from_checkpoint(path)
    with pytest.raises(ValueError, match="strict=True.*contradicts NotStrict.strict_loading=False"):
        NotStrict.load_from_checkpoint(path, strict=True)


def test_strict_loading_false_on_the_module_is_honoured_by_the_trainer_too(checkpoint):
    path, _ = checkpoint
    quiet_trainer().test(NotStrict(width=6), loader(64), ckpt_path=path, verbose=False)
    with pytest.raises(CheckpointMismatchError, match="Missing key"):
        quiet_trainer().test(Extended(width=6), loader(64), ckpt_path=path, verbose=False)


class Opaque:
    """An object torch's weights-only loading will not rebuild."""

    def __init__(self, value: int) -> None:
        self.value = value


class WithObject(Sized):
    def __init__(self, width: int = 4, lr: float = 0.1, extra: Opaque | None = None) -> None:
        super().__init__(width, lr)


def test_weights_only_loading_refuses_arbitrary_objects_unless_asked(tmp_path):
    model = WithObject(extra=Opaque(3))
    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(model, loader(64))
    trainer.save_checkpoint(tmp_path / "object.ckpt")
    with pytest.raises(CheckpointError, match="weights_only=False"):
        WithObject.load_from_checkpoint(tmp_path / "object.ckpt")
    restored = WithObject.load_from_checkpoint(tmp_path / "object.ckpt", weights_only=False)
    assert restored.hparams.extra.value == 3


def test_load_from_checkpoint_is_refused_on_an_instance(checkpoint):
    path, trained = checkpoint
    with pytest.raises(TypeError, match=r"called on the class: model = Sized.load_from_checkpoint"):
        trained.load_from_checkpoint(path)


def test_a_file_object_loads_too(checkpoint):
    path, trained = checkpoint
    restored = Sized.load_from_checkpoint(io.BytesIO(path.read_bytes()))
    assert torch.equal(restored.head.bias, trained.head.bias)


def test_on_load_checkpoint_sees_the_checkpoint_before_the_weights_are_loaded(checkpoint):
    path, trained = checkpoint

    class Renamed(Sized):
        """Its layers got new names since the checkpoint was written."""

        def __init__(self, width: int = 4, lr: float = 0.1) -> None:
            super().__init__(width, lr)
            self.output = self.head
            del self.head

        def forward(self, x):
            return self.output(torch.tanh(self.body(x)))

        def on_load_checkpoint(self, checkpoint):
            state = checkpoint["state_dict"]
            for key in [key for key in state if key.startswith("head.")]:
                state["output." + key[5:]] = state.pop(key)

    restored = Renamed.load_from_checkpoint(path)
    assert torch.equal(restored.output.weight, trained.head.weight)
    results = quiet_trainer().test(Renamed(width=6), loader(64, batch_size=64), ckpt_path=path, verbose=False)
    x, y = next(iter(loader(64, batch_size=64)))
    with torch.no_grad():
        assert results[0]["test_loss"] == pytest.approx(float(torch.nn.functional.mse_loss(trained(x), y)))


def test_configure_model_builds_its_layers_before_the_weights_load(tmp_path):
    class Late(Sized):
        def __init__(self, width: int = 4, lr: float = 0.1) -> None:
            super().__init__(width, lr)
            self.late = None

        def configure_model(self):
            if self.late is None:
                self.late = torch.nn.Linear(2, 2)

    model = Late()
    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(model, loader(64))
    trainer.save_checkpoint(tmp_path / "late.ckpt")
    assert torch.equal(Late.load_from_checkpoint(tmp_path / "late.ckpt").late.weight, model.late.weight)


def test_missing_devices_map_to_the_cpu_and_present_ones_keep_their_place():
    storage = torch.zeros(2).untyped_storage()
    assert _saved_device_if_available(storage, "cpu") is None
    assert _saved_device_if_available(storage, "nosuchdevice:0").device.type == "cpu"


class Data(trellis.DataModule):
    def __init__(self, batch_size: int = 32, samples: int = 64) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.batches_served = 0

    def train_dataloader(self):
        self.batches_served += 1
        return loader(self.hparams.samples, self.hparams.batch_size)

    def test_dataloader(self):
        return loader(self.hparams.samples, self.hparams.batch_size)

    def state_dict(self):
        return {"batches_served": self.batches_served}

    def load_state_dict(self, state):
        self.batches_served = state["batches_served"]


def test_a_datamodule_is_rebuilt_with_its_hyperparameters_and_state(tmp_path):
    data = Data(batch_size=16)
    trainer = quiet_trainer(max_epochs=2, reload_dataloaders_every_n_epochs=1)
    trainer.fit(Sized(), datamodule=data)
    trainer.save_checkpoint(tmp_path / "with_data.ckpt")
    checkpoint = torch.load(tmp_path / "with_data.ckpt", weights_only=True)
    assert checkpoint["Data"] == {"batches_served": 2}
    assert checkpoint["datamodule_hyper_parameters"] == {"batch_size": 16, "samples": 64}

    restored = Data.load_from_checkpoint(tmp_path / "with_data.ckpt", samples=32)
    assert restored.hparams == {"batch_size": 16, "samples": 32} and restored.batches_served == 2

    fresh = Data(batch_size=16)
    quiet_trainer().test(Sized(), datamodule=fresh, ckpt_path=tmp_path / "with_data.ckpt", verbose=False)
    assert fresh.batches_served == 2
    with pytest.raises(TypeError, match="called on the class"):
        data.load_from_checkpoint(tmp_path / "with_data.ckpt")


def test_a_module_pickles_without_its_trainer(checkpoint):
    _, trained = checkpoint
    trained.trainer = quiet_trainer()
    copy = pickle.loads(pickle.dumps(trained))
    assert copy._trainer is None and trained._trainer is not None
    assert torch.equal(copy.head.weight, trained.head.weight)
