"""ZeRO-Offload presets for real on CPU: DeepSpeed's CPU Adam (a C++ op JIT-compiled on first use, cached in
~/.cache/torch_extensions; about 2 minutes of one core) steps the offloaded optimizer states."""

from __future__ import annotations

import os
import sys

import pytest
import torch

pytest.importorskip("deepspeed", reason="trellis-deepspeed's training tests need deepspeed installed")

from trellis.errors import ConfigurationError  # noqa: E402
from trellis_deepspeed import DeepSpeedStrategy  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "scripts"))
import ds_testkit as kit  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning")]

LR = 0.02
#: DeepSpeed's CPU Adam against torch.optim.Adam over 16 steps (5.1e-7 measured here).
CPU_ADAM_TOLERANCE = 2e-6


def fitted(strategy, root: str, optimizer: str, epochs: int = 2):  # noqa: ANN001, ANN201
    trainer = kit.trainer(strategy, root, max_epochs=epochs)
    module = kit.Regressor(lr=LR, optimizer=optimizer)
    trainer.fit(module, kit.loader())
    return trainer, module


@pytest.fixture(scope="module")
def torch_adam_weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """Stage 2 without offload, stepping torch.optim.Adam: what the offloaded runs must reproduce."""
    trainer, _ = fitted(DeepSpeedStrategy(stage=2), str(tmp_path_factory.mktemp("reference")), "adam")
    return kit.weights(trainer)


def assert_close_to(weights: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> None:
    for name, tensor in reference.items():
        torch.testing.assert_close(weights[name], tensor, rtol=0, atol=CPU_ADAM_TOLERANCE)


def test_stage_2_offload_steps_cpu_adam_like_torch_adam(tmp_path, torch_adam_weights) -> None:
    from deepspeed.ops.adam import DeepSpeedCPUAdam

    trainer, module = fitted("deepspeed_stage_2_offload", str(tmp_path), "cpu_adam")
    assert trainer.strategy.engine.zero_cpu_offload()
    assert isinstance(trainer.optimizers[0], DeepSpeedCPUAdam)
    assert sum(module.losses[-4:]) < 0.5 * sum(module.losses[:4])
    assert_close_to(kit.weights(trainer), torch_adam_weights)


def test_stage_3_offload_trains_and_resumes_the_same_run(tmp_path, torch_adam_weights) -> None:
    run = kit.straight_and_resumed(lambda: "deepspeed_stage_3_offload", str(tmp_path), lr=LR, optimizer="cpu_adam")
    assert run["straight_step"] == run["resumed_step"] == 16
    assert run["resumed_losses"] == run["losses"]
    for name, tensor in run["straight_weights"].items():
        torch.testing.assert_close(run["resumed_weights"][name], tensor, rtol=0, atol=0)
    assert_close_to(run["straight_weights"], torch_adam_weights)


def test_an_optimizer_from_the_config_is_deepspeeds_cpu_adam_under_offload(tmp_path, torch_adam_weights) -> None:
    from deepspeed.ops.adam import DeepSpeedCPUAdam

    config = {"optimizer": {"type": "Adam", "params": {"lr": LR, "weight_decay": 0.0}}}
    strategy = DeepSpeedStrategy(stage=2, offload_optimizer=True, config=config)
    trainer, _ = fitted(strategy, str(tmp_path), "none")
    assert isinstance(trainer.optimizers[0], DeepSpeedCPUAdam)
    assert_close_to(kit.weights(trainer), torch_adam_weights)


def test_a_torch_optimizer_under_offload_says_what_to_use(tmp_path) -> None:
    with pytest.raises(ConfigurationError, match="return deepspeed.ops.adam.DeepSpeedCPUAdam") as error:
        fitted("deepspeed_stage_2_offload", str(tmp_path), "adam")
    assert "returned torch.optim.adam.Adam" in str(error.value) and "zero_force_ds_cpu_optimizer" in str(error.value)


def test_a_torch_optimizer_under_offload_runs_where_the_config_allows_it(tmp_path, torch_adam_weights) -> None:
    strategy = DeepSpeedStrategy(stage=2, offload_optimizer=True, config={"zero_force_ds_cpu_optimizer": False})
    trainer, _ = fitted(strategy, str(tmp_path), "adam")
    assert trainer.strategy.engine.zero_cpu_offload()
    assert_close_to(kit.weights(trainer), torch_adam_weights)
