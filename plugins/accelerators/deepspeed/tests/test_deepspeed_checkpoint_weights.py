"""What a DeepSpeed save puts in the Trainer's checkpoint: no gathered weights for a training checkpoint (the
engine writes the shards), the full weights and nothing else for a weights-only one."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

import pytest
import torch

pytest.importorskip("deepspeed", reason="trellis-deepspeed's training tests need deepspeed installed")

import trellis  # noqa: E402
from trellis.errors import CheckpointError  # noqa: E402
from trellis_deepspeed import DeepSpeedStrategy  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "scripts"))
import ds_testkit as kit  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning")]


@pytest.fixture
def gathers(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts every ZeRO-3 gather of full parameters through deepspeed.zero.GatheredParameters."""
    import deepspeed

    counted: list[int] = []
    original = deepspeed.zero.GatheredParameters

    @contextlib.contextmanager
    def counting(params: Any, *args: Any, **kwargs: Any) -> Any:
        counted.append(len(list(params)))
        with original(params, *args, **kwargs):
            yield

    monkeypatch.setattr(deepspeed.zero, "GatheredParameters", counting)
    return counted


def tensors_in(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel()
    if isinstance(value, dict):
        return sum(tensors_in(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensors_in(item) for item in value)
    return 0


def test_stage_3_training_checkpoint_gathers_no_weights_and_still_resumes(tmp_path, gathers: list[int]) -> None:
    interrupted = kit.trainer(DeepSpeedStrategy(stage=3), str(tmp_path), max_epochs=1)
    interrupted.fit(kit.Regressor(), kit.loader())
    assert tensors_in(interrupted.strategy.checkpoint_weights()) == 0
    interrupted.save_checkpoint(tmp_path / "run.ckpt")
    assert gathers == []
    resumed = kit.trainer(DeepSpeedStrategy(stage=3), str(tmp_path), max_epochs=2)
    resumed.fit(kit.Regressor(), kit.loader(), ckpt_path=tmp_path / "run.ckpt")
    straight = kit.trainer(DeepSpeedStrategy(stage=3), str(tmp_path), max_epochs=2)
    straight.fit(kit.Regressor(), kit.loader())
    assert resumed.global_step == straight.global_step == 16
    expected = kit.weights(straight)
    for name, tensor in kit.weights(resumed).items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=1e-6)


@pytest.mark.parametrize("stage", [2, 3])
def test_weights_only_save_is_one_file_of_full_weights_without_optimizer_state(stage: int, tmp_path) -> None:
    trainer = kit.trainer(DeepSpeedStrategy(stage=stage), str(tmp_path))
    trainer.fit(kit.Regressor(lr=0.07), kit.loader())
    path = tmp_path / "weights.ckpt"
    trainer.save_checkpoint(path, weights_only=True)
    assert path.is_file()
    saved = torch.load(path, weights_only=True)
    assert "optimizer_states" not in saved and "loops" not in saved
    restored = kit.Regressor.load_from_checkpoint(str(path))
    assert restored.hparams.lr == 0.07
    for name, tensor in kit.weights(trainer).items():
        torch.testing.assert_close(restored.state_dict()[name], tensor, rtol=0, atol=0)


def test_weights_only_model_checkpoint_keeps_files_and_removes_the_worse_one(tmp_path) -> None:
    callback = trellis.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpts", monitor="val_loss", save_top_k=1,
                                                 save_weights_only=True)
    trainer = kit.trainer(DeepSpeedStrategy(stage=2), str(tmp_path), max_epochs=3, enable_checkpointing=True,
                          callbacks=[callback])
    trainer.fit(kit.Regressor(), kit.loader(), kit.loader())
    kept = sorted(os.listdir(tmp_path / "ckpts"))
    assert kept == [os.path.basename(callback.best_model_path)]
    assert os.path.isfile(callback.best_model_path)


def test_resuming_training_from_a_weights_only_file_is_refused(tmp_path) -> None:
    trainer = kit.trainer(DeepSpeedStrategy(stage=2), str(tmp_path))
    trainer.fit(kit.Regressor(), kit.loader())
    trainer.save_checkpoint(tmp_path / "weights.ckpt", weights_only=True)
    again = kit.trainer(DeepSpeedStrategy(stage=2), str(tmp_path), max_epochs=2)
    with pytest.raises(CheckpointError, match="resume a DeepSpeed run from the directory it saved"):
        again.fit(kit.Regressor(), kit.loader(), ckpt_path=tmp_path / "weights.ckpt")
