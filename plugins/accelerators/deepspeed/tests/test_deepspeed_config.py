"""The DeepSpeed config the strategy builds from a dict, a JSON file, keyword arguments and Trainer flags."""

from __future__ import annotations

import json

import pytest

from trellis import discovery
from trellis.errors import ConfigurationError
from trellis_deepspeed import DeepSpeedStrategy
from trellis_deepspeed.config import TrainerSettings, complete_config

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def build(config: dict | None = None, with_optimizer: bool = True, **settings) -> dict:
    return complete_config(config or {}, TrainerSettings(**settings), with_optimizer=with_optimizer,
                           micro_batch_size=None)


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
    config = complete_config({}, TrainerSettings(accumulate_grad_batches=4, world_size=2), with_optimizer=True,
                             micro_batch_size=8)
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
    assert build({"train_batch_size": 32}, accumulate_grad_batches=2, world_size=2)["train_micro_batch_size_per_gpu"] == 8
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
    strategy = discovery.load("strategy", name)()
    assert isinstance(strategy, DeepSpeedStrategy)
    zero = strategy.config["zero_optimization"]
    assert zero["stage"] == stage
    assert {key for key in zero if key.startswith("offload")} == offload
