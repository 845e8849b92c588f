"""A real DeepSpeed engine on CPU over gloo, in this process (a world of one the strategy forms itself)."""

from __future__ import annotations

import os
import sys

import pytest
import torch

pytest.importorskip("deepspeed", reason="trellis-deepspeed's training tests need deepspeed installed")

from trellis.errors import CheckpointError, ConfigurationError  # noqa: E402
from trellis.plugin import Precision  # noqa: E402
from trellis_deepspeed import DeepSpeedStrategy, convert_to_fp32_checkpoint  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "scripts"))
import ds_testkit as kit  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning")]


class BF16Mixed(Precision):
    """The name is all the strategy reads: DeepSpeed's bf16 section replaces autocast and scaling."""

    name = "bf16-mixed"


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_loss_falls_and_resume_continues_the_same_run(stage: int, tmp_path) -> None:
    run = kit.straight_and_resumed(lambda: DeepSpeedStrategy(stage=stage), str(tmp_path))
    assert mean(run["losses"][-4:]) < 0.5 * mean(run["losses"][:4])
    assert run["straight_step"] == run["resumed_step"] == 16
    assert run["resumed_losses"] == run["losses"]
    for name, tensor in run["straight_weights"].items():
        torch.testing.assert_close(run["resumed_weights"][name], tensor, rtol=0, atol=1e-6)
    assert os.path.isdir(run["checkpoint"]) and not os.path.exists(run["checkpoint"] + ".partial")


def test_accumulation_and_clipping_match_a_plain_loop(tmp_path) -> None:
    module = kit.Regressor(lr=0.1)
    trainer = kit.trainer(DeepSpeedStrategy(stage=2), str(tmp_path), accumulate_grad_batches=2,
                          gradient_clip_val=0.5)
    trainer.fit(module, kit.loader())
    net = kit.build_net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    for index, (inputs, targets) in enumerate(kit.loader()):
        (torch.nn.functional.mse_loss(net(inputs), targets) / 2).backward()
        if index % 2 == 1:
            torch.nn.utils.clip_grad_norm_(net.parameters(), 0.5)
            optimizer.step()
            optimizer.zero_grad()
    assert trainer.global_step == 4
    weights = kit.weights(trainer)
    for name, tensor in net.state_dict().items():
        torch.testing.assert_close(weights[f"net.{name}"], tensor, rtol=0, atol=1e-6)


def test_micro_batch_size_comes_from_the_dataloader_unless_the_config_fixes_it(tmp_path) -> None:
    strategy = DeepSpeedStrategy(stage=1)
    kit.trainer(strategy, str(tmp_path)).fit(kit.Regressor(), kit.loader(batch_size=16))
    assert strategy.engine.train_micro_batch_size_per_gpu() == 16
    fixed = DeepSpeedStrategy(stage=1, micro_batch_size=4)
    kit.trainer(fixed, str(tmp_path)).fit(kit.Regressor(), kit.loader(batch_size=16))
    assert fixed.engine.train_micro_batch_size_per_gpu() == 4


def test_optimizer_and_scheduler_from_the_config(tmp_path) -> None:
    config = {
        "optimizer": {"type": "AdamW", "params": {"lr": 0.02, "torch_adam": True}},
        "scheduler": {"type": "WarmupLR", "params": {"warmup_min_lr": 0.0, "warmup_max_lr": 0.02,
                                                     "warmup_num_steps": 4, "warmup_type": "linear"}},
    }
    strategy = DeepSpeedStrategy(stage=2, config=config)
    module = kit.Regressor(optimizer="none")
    trainer = kit.trainer(strategy, str(tmp_path), max_epochs=3)
    trainer.fit(module, kit.loader())
    assert isinstance(trainer.optimizers[0], torch.optim.AdamW)
    assert strategy.engine.get_lr() == [0.02]  # warmed up after 4 of the 24 steps
    assert mean(module.losses[-4:]) < 0.5 * mean(module.losses[:4])


def test_configure_optimizers_and_config_optimizer_together_is_an_error(tmp_path) -> None:
    strategy = DeepSpeedStrategy(config={"optimizer": {"type": "AdamW", "params": {"torch_adam": True}}})
    with pytest.raises(ConfigurationError, match="keep one"):
        kit.trainer(strategy, str(tmp_path)).fit(kit.Regressor(), kit.loader())


def test_bf16_mixed_trains_with_bf16_weights(tmp_path) -> None:
    strategy = DeepSpeedStrategy(stage=2)
    module = kit.Regressor()
    trainer = kit.trainer(strategy, str(tmp_path), precision=BF16Mixed(), max_epochs=2)
    trainer.fit(module, kit.loader())
    assert strategy.engine.bfloat16_enabled()
    assert module.net[0].weight.dtype == torch.bfloat16
    assert mean(module.losses[-4:]) < 0.5 * mean(module.losses[:4])


def test_stage_3_creates_configure_model_layers_partitioned(tmp_path) -> None:
    partitioned: list[bool] = []

    class Probe(kit.Regressor):
        def configure_model(self) -> None:
            super().configure_model()
            partitioned.append(all(hasattr(parameter, "ds_id") for parameter in self.parameters()))

    module = Probe(lazy=True)
    trainer = kit.trainer(DeepSpeedStrategy(stage=3), str(tmp_path), max_epochs=2)
    trainer.fit(module, kit.loader())
    assert partitioned == [True]
    assert mean(module.losses[-4:]) < 0.5 * mean(module.losses[:4])


def test_export_to_fp32_and_load_without_deepspeed(tmp_path) -> None:
    trainer = kit.trainer(DeepSpeedStrategy(stage=3), str(tmp_path))
    trainer.fit(kit.Regressor(lr=0.07), kit.loader())
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    convert_to_fp32_checkpoint(tmp_path / "run.ckpt", tmp_path / "export" / "model.pt")
    restored = kit.Regressor.load_from_checkpoint(str(tmp_path / "export" / "model.pt"))
    assert restored.hparams.lr == 0.07
    for name, tensor in kit.weights(trainer).items():
        torch.testing.assert_close(restored.state_dict()[name], tensor, rtol=0, atol=0)


def test_validate_from_a_checkpoint_directory(tmp_path) -> None:
    trained = kit.Regressor()
    trainer = kit.trainer(DeepSpeedStrategy(stage=2), str(tmp_path), max_epochs=2)
    trainer.fit(trained, kit.loader())
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    expected = trainer.validate(trained, kit.loader(), verbose=False)[0]["val_loss"]
    fresh = kit.trainer(DeepSpeedStrategy(stage=2), str(tmp_path))
    result = fresh.validate(kit.Regressor(), kit.loader(), ckpt_path=tmp_path / "run.ckpt", verbose=False)
    assert result[0]["val_loss"] == pytest.approx(expected, rel=1e-6)


def test_resuming_from_something_that_is_not_a_deepspeed_checkpoint_is_refused(tmp_path) -> None:
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}}, plain)
    with pytest.raises(CheckpointError, match="not a DeepSpeed checkpoint directory"):
        kit.trainer(DeepSpeedStrategy(stage=2), str(tmp_path)).fit(kit.Regressor(), kit.loader(), ckpt_path=plain)

