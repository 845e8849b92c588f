"""The DeepSpeed config: read from a dict or JSON file, completed from keyword arguments and Trainer flags.

Every Trainer flag DeepSpeed also has a key for (precision, gradient accumulation, gradient clipping) is
written into the config; a config that already says something different is an error, never silently won.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from typing import Any

from trellis.errors import ConfigurationError
from trellis.plugin import TrainingSettings

ConfigSource = Mapping[str, Any] | str | os.PathLike | None

#: Trainer precision name -> DeepSpeed config section it enables (None: full float32).
PRECISION_SECTIONS: dict[str, str | None] = {"32-true": None, "16-mixed": "fp16", "bf16-mixed": "bf16"}
#: micro batch size DeepSpeed is initialised with until the training dataloader says the real one.
PLACEHOLDER_MICRO_BATCH_SIZE = 1


def read_config(source: ConfigSource) -> dict[str, Any]:
    """A private copy of the user's config: a mapping, a path to a JSON file, or None for an empty one."""
    if source is None:
        return {}
    if isinstance(source, Mapping):
        return copy.deepcopy(dict(source))
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise ConfigurationError(
            f"DeepSpeed config file {path!r} does not exist: pass the path of a JSON file, or the config as a dict"
        )
    with open(path, encoding="utf-8") as handle:
        try:
            loaded = json.load(handle)
        except json.JSONDecodeError as error:
            raise ConfigurationError(f"DeepSpeed config file {path!r} is not valid JSON: {error}") from None
    if not isinstance(loaded, dict):
        raise ConfigurationError(f"DeepSpeed config file {path!r} holds a {type(loaded).__name__}, not a JSON object")
    return loaded


def merge_zero_options(config: dict[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """Write keyword-argument ZeRO options into config["zero_optimization"]; a config that disagrees is an error."""
    zero = config.setdefault("zero_optimization", {})
    for key, value in options.items():
        if value is None:
            continue
        if key in zero and zero[key] != value:
            raise ConfigurationError(
                f"DeepSpeed zero_optimization.{key} is {zero[key]!r} in the config but {value!r} as a keyword "
                "argument: give it in one place"
            )
        zero[key] = value
    return config


def complete_config(
    config: dict[str, Any],
    settings: TrainingSettings,
    *,
    precision: str,
    world_size: int,
    with_optimizer: bool,
    micro_batch_size: int | None,
) -> dict[str, Any]:
    """The config DeepSpeed is initialised with: the user's plus the Trainer's flags, checked for conflicts.

    `micro_batch_size` is the training dataloader's when known; without it and without one in the config,
    a placeholder is used and replaced once the dataloader is seen (see DeepSpeedStrategy.process_dataloader).
    """
    config = copy.deepcopy(config)
    _set_precision(config, precision)
    _set_accumulation(config, settings.accumulate_grad_batches)
    _set_clipping(config, settings.gradient_clip_val, settings.gradient_clip_algorithm)
    _set_batch_sizes(config, settings.accumulate_grad_batches, world_size, micro_batch_size)
    config.setdefault("zero_allow_untested_optimizer", True)
    if not with_optimizer:
        config.pop("optimizer", None)
        config.pop("scheduler", None)
        if zero_stage(config) < 3:  # stages 1 and 2 partition optimizer state only; evaluation has none
            config["zero_optimization"] = {"stage": 0}
    return config


def zero_stage(config: Mapping[str, Any]) -> int:
    return int(config.get("zero_optimization", {}).get("stage", 0))


def micro_batch_from_config(config: Mapping[str, Any]) -> int | None:
    """The micro batch size the user fixed in the config (then the dataloader does not override it)."""
    return _given(config, "train_micro_batch_size_per_gpu")


def check_precision(name: str) -> None:
    if name not in PRECISION_SECTIONS:
        raise ConfigurationError(
            f"strategy='deepspeed' runs precision {', '.join(map(repr, PRECISION_SECTIONS))}, not {name!r}: "
            "pass one of those to Trainer(precision=...)"
        )


def _given(config: Mapping[str, Any], key: str) -> Any:
    """A config value, None when absent or "auto" (the Hugging Face convention for "filled by the trainer")."""
    value = config.get(key)
    return None if value == "auto" else value


def _set_precision(config: dict[str, Any], precision: str) -> None:
    check_precision(precision)
    wanted = PRECISION_SECTIONS[precision]
    for section in ("fp16", "bf16"):
        entry = config.get(section)
        if not isinstance(entry, dict):
            entry = {}
        enabled = _given(entry, "enabled")
        if enabled and section != wanted:
            raise ConfigurationError(
                f"the DeepSpeed config enables {section} but Trainer(precision={precision!r}): pass "
                f"precision={'16-mixed' if section == 'fp16' else 'bf16-mixed'!r}, "
                f"or remove '{section}' from the config"
            )
        if section == wanted:
            config[section] = {**entry, "enabled": True}
        elif section in config:
            config[section] = {**entry, "enabled": False}


def _set_accumulation(config: dict[str, Any], accumulate: int) -> None:
    given = _given(config, "gradient_accumulation_steps")
    if given is not None and given != accumulate:
        raise ConfigurationError(
            f"the DeepSpeed config sets gradient_accumulation_steps={given} but "
            f"Trainer(accumulate_grad_batches={accumulate}): set Trainer(accumulate_grad_batches={given}) and "
            "remove the key from the config (the Trainer's loop drives accumulation)"
        )
    config["gradient_accumulation_steps"] = accumulate


def _set_clipping(config: dict[str, Any], value: float | None, algorithm: str) -> None:
    given = _given(config, "gradient_clipping")
    if value and algorithm != "norm":
        raise ConfigurationError(
            f"gradient_clip_algorithm={algorithm!r}: DeepSpeed clips gradients by total norm only; pass "
            "gradient_clip_algorithm='norm'"
        )
    if value and given not in (None, 0, 0.0) and float(given) != float(value):
        raise ConfigurationError(
            f"the DeepSpeed config sets gradient_clipping={given} but Trainer(gradient_clip_val={value}): give it in "
            "one place"
        )
    if value:
        config["gradient_clipping"] = float(value)
    elif given is None:
        config["gradient_clipping"] = 0.0  # DeepSpeed's own default clips at 1.0; the Trainer's is no clipping


def _set_batch_sizes(config: dict[str, Any], accumulate: int, world_size: int, micro_batch_size: int | None) -> None:
    micro = _given(config, "train_micro_batch_size_per_gpu")
    total = _given(config, "train_batch_size")
    if micro is None and total is not None:
        if total % (accumulate * world_size):
            raise ConfigurationError(
                f"the DeepSpeed config's train_batch_size={total} is not a multiple of accumulate_grad_batches "
                f"({accumulate}) x processes ({world_size}): fix it, or set train_micro_batch_size_per_gpu instead"
            )
        micro = total // (accumulate * world_size)
    micro = micro or micro_batch_size or PLACEHOLDER_MICRO_BATCH_SIZE
    if total is not None and total != micro * accumulate * world_size:
        raise ConfigurationError(
            f"the DeepSpeed config's train_batch_size={total} is not train_micro_batch_size_per_gpu ({micro}) x "
            f"accumulate_grad_batches ({accumulate}) x processes ({world_size}): remove train_batch_size and let "
            "the Trainer derive it"
        )
    config["train_micro_batch_size_per_gpu"] = micro
    config["train_batch_size"] = micro * accumulate * world_size
