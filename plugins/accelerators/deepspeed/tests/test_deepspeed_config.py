"""The DeepSpeed config the strategy builds from a dict, a JSON file, keyword arguments and Trainer flags."""

from __future__ import annotations

import json

import pytest

import trellis
from trellis.errors import ConfigurationError
from trellis.plugin import ScriptLauncher, TrainingSettings, load_plugin
from trellis.testing.processes import LAUNCHER_VARIABLES
from trellis_deepspeed import DeepSpeedStrategy
from trellis_deepspeed.config import complete_config
from trellis_deepspeed.environment import DeepSpeedLauncherEnvironment

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def build(config: dict | None = None, with_optimizer: bool = True, precision: str = "32-true", world_size: int = 1,
          **settings) -> dict:
    return complete_config(config or {}, TrainingSettings(**settings), precision=precision, world_size=world_size,
                           with_optimizer=with_optimizer, micro_batch_size=None)


@pytest.mark.parametrize(("precision", "fp16", "bf16"), [("32-true", None, None), ("16-mixed", True, None),
                                                        ("bf16-mixed", None, True)])
def test_precision_enables_the_matching_section(precision: str, fp16: bool | None, bf16: bool | None) -> None:
    config = build(precision=precision)
    assert config.get("fp16", {}).get("enabled") == fp16
    assert config.get("bf16", {}).get("enabled") == bf16


def test_precision_keeps_the_users_loss_scaling_settings() -> None:
    config = build({"fp16": {"initial_scale_power": 8}}, precision="16-mixed")
    assert config["fp16"] == {"initial_scale_power": 8, "enabled": True}


def test_config_precision_that_contradicts_the_trainer_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="enables fp16 but Trainer\\(precision='bf16-mixed'\\)"):
        build({"fp16": {"enabled": True}}, precision="bf16-mixed")


def test_unsupported_precision_names_the_supported_ones() -> None:
    with pytest.raises(ConfigurationError, match="not '64-true'.*Trainer\\(precision"):
        build(precision="64-true")


def test_accumulation_comes_from_the_trainer_and_sizes_the_global_batch() -> None:
    config = complete_config({}, TrainingSettings(accumulate_grad_batches=4), precision="32-true", world_size=2,
                             with_optimizer=True, micro_batch_size=8)
    assert config["gradient_accumulation_steps"] == 4
    assert config["train_batch_size"] == 8 * 4 * 2


def test_config_accumulation_that_differs_from_the_trainer_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="Trainer\\(accumulate_grad_batches=4\\)"):
        build({"gradient_accumulation_steps": 4}, accumulate_grad_batches=1)


def test_auto_values_are_filled_by_the_trainer() -> None:
    config = build({"gradient_accumulation_steps": "auto", "train_micro_batch_size_per_gpu": "auto"},
                   accumulate_grad_batches=2)
    assert config["gradient_accumulation_steps"] == 2
    assert config["train_micro_batch_size_per_gpu"] == 1  # placeholder until the dataloader is seen


def test_train_batch_size_gives_the_micro_batch_and_must_divide() -> None:
    config = build({"train_batch_size": 32}, accumulate_grad_batches=2, world_size=2)
    assert config["train_micro_batch_size_per_gpu"] == 8
    with pytest.raises(ConfigurationError, match="not a multiple"):
        build({"train_batch_size": 30}, accumulate_grad_batches=4)
    with pytest.raises(ConfigurationError, match="remove train_batch_size"):
        build({"train_batch_size": 30, "train_micro_batch_size_per_gpu": 4})


def test_gradient_clipping_follows_the_trainer_and_is_off_by_default() -> None:
    assert build(gradient_clip_val=0.5)["gradient_clipping"] == 0.5
    assert build()["gradient_clipping"] == 0.0  # DeepSpeed alone would clip at 1.0
    assert build({"gradient_clipping": 2.0})["gradient_clipping"] == 2.0
    with pytest.raises(ConfigurationError, match="gradient_clipping=2.0 but Trainer\\(gradient_clip_val=0.5\\)"):
        build({"gradient_clipping": 2.0}, gradient_clip_val=0.5)
    with pytest.raises(ConfigurationError, match="total norm only"):
        build(gradient_clip_val=0.5, gradient_clip_algorithm="value")


def test_evaluation_config_drops_optimizer_sections() -> None:
    config = build({"optimizer": {"type": "AdamW"}, "scheduler": {"type": "WarmupLR"}}, with_optimizer=False)
    assert "optimizer" not in config and "scheduler" not in config
    assert config["zero_optimization"] == {"stage": 0}
    assert build({"zero_optimization": {"stage": 3}}, with_optimizer=False)["zero_optimization"] == {"stage": 3}


def test_config_from_a_json_file_and_keyword_arguments(tmp_path) -> None:
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 4}))
    strategy = DeepSpeedStrategy(config=str(path), offload_parameters=True, reduce_bucket_size=1000)
    assert strategy.zero_stage == 3
    assert strategy.config["zero_optimization"] == {"stage": 3, "reduce_bucket_size": 1000,
                                                    "offload_param": {"device": "cpu"}}
    assert strategy.config["train_micro_batch_size_per_gpu"] == 4


def test_config_errors_name_the_problem(tmp_path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        DeepSpeedStrategy(config=str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        DeepSpeedStrategy(config=str(tmp_path / "bad.json"))
    with pytest.raises(ConfigurationError, match="stage is 3 in the config but 2 as a keyword"):
        DeepSpeedStrategy(stage=2, config={"zero_optimization": {"stage": 3}})
    with pytest.raises(ConfigurationError, match="needs ZeRO stage 3"):
        DeepSpeedStrategy(stage=2, offload_parameters=True)


@pytest.mark.parametrize(("name", "stage", "offload"), [
    ("deepspeed", 2, set()), ("deepspeed_stage_1", 1, set()), ("deepspeed_stage_2", 2, set()),
    ("deepspeed_stage_3", 3, set()), ("deepspeed_stage_2_offload", 2, {"offload_optimizer"}),
    ("deepspeed_stage_3_offload", 3, {"offload_optimizer", "offload_param"}),
])
def test_strategy_names_resolve_to_presets(name: str, stage: int, offload: set[str]) -> None:
    strategy = load_plugin("strategy", name)()
    assert isinstance(strategy, DeepSpeedStrategy)
    zero = strategy.config["zero_optimization"]
    assert zero["stage"] == stage
    assert {key for key in zero if key.startswith("offload")} == offload


@pytest.fixture
def no_launcher(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("name", ["deepspeed", "deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_3",
                                  "deepspeed_stage_2_offload", "deepspeed_stage_3_offload"])
def test_every_alias_started_by_plain_python_launches_its_processes_as_ddp_does(
    name: str, no_launcher: pytest.MonkeyPatch
) -> None:
    strategy = trellis.Trainer(accelerator="cpu", strategy=name, devices=2, logger=False).strategy
    assert isinstance(strategy.launcher, ScriptLauncher)
    assert (strategy.world_size, strategy.global_rank) == (2, 0)


def test_under_torchrun_it_attaches_to_the_launched_processes(no_launcher: pytest.MonkeyPatch) -> None:
    for name, value in {"RANK": "1", "LOCAL_RANK": "1", "GROUP_RANK": "0", "LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "2",
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29400", "TORCHELASTIC_RUN_ID": "job"}.items():
        no_launcher.setenv(name, value)
    strategy = trellis.Trainer(accelerator="cpu", strategy="deepspeed_stage_3", devices=2, logger=False).strategy
    assert strategy.cluster_environment.name == "torchelastic" and strategy.launcher is None
    assert (strategy.global_rank, strategy.local_rank, strategy.world_size) == (1, 1, 2)


def test_under_deepspeeds_launcher_it_attaches_and_checks_the_process_count(no_launcher: pytest.MonkeyPatch) -> None:
    for name, value in {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_SIZE": "2", "CROSS_RANK": "1",
                        "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}.items():
        no_launcher.setenv(name, value)
    strategy = trellis.Trainer(accelerator="cpu", strategy="deepspeed", devices=2, num_nodes=2, logger=False).strategy
    assert isinstance(strategy.cluster_environment, DeepSpeedLauncherEnvironment) and strategy.launcher is None
    assert (strategy.global_rank, strategy.local_rank, strategy.node_rank, strategy.world_size) == (3, 1, 1, 4)
    with pytest.raises(ConfigurationError, match="started 2 processes per node, 4 in all, but the Trainer has "
                                                 "devices=1 and num_nodes=2: pass devices=2 and num_nodes=2"):
        trellis.Trainer(accelerator="cpu", strategy="deepspeed", devices=1, num_nodes=2, logger=False)


def test_engine_config_comes_from_the_training_settings_the_kernel_passes() -> None:
    strategy = DeepSpeedStrategy(stage=2)
    strategy.training_settings = TrainingSettings(accumulate_grad_batches=3, gradient_clip_val=0.25)
    config = strategy._engine_config(with_optimizer=True)
    assert (config["gradient_accumulation_steps"], config["gradient_clipping"]) == (3, 0.25)
