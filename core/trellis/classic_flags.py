"""Trainer flags from older Lightning versions, mapped onto today's with a warning naming the modern spelling."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trellis.utils.rank_zero import rank_zero_warn


def _devices_on(accelerator: str, flag: str) -> Callable[[Any], tuple[dict[str, Any], str]]:
    def translate(value: Any) -> tuple[dict[str, Any], str]:
        if value in (None, 0, "0", []):
            return {"accelerator": "cpu"}, "accelerator='cpu'"
        return {"accelerator": accelerator, "devices": value}, f"accelerator={accelerator!r}, devices={value!r}"

    return translate


def _progress_bar(value: Any) -> tuple[dict[str, Any], str]:
    if not value:
        return {"enable_progress_bar": False}, "enable_progress_bar=False"
    return {"progress_bar_refresh_rate": int(value)}, f"callbacks=[TQDMProgressBar(refresh_rate={value})]"


def _summary(value: Any) -> tuple[dict[str, Any], str]:
    if value is None:
        return {"enable_model_summary": False}, "enable_model_summary=False"
    depth = -1 if value == "full" else 1
    return {"model_summary_depth": depth}, f"callbacks=[ModelSummary(max_depth={depth})]"


#: classic flag -> translation into (modern flags, modern spelling for the warning).
TRANSLATIONS: dict[str, Callable[[Any], tuple[dict[str, Any], str]]] = {
    "gpus": _devices_on("gpu", "gpus"),
    "tpu_cores": _devices_on("tpu", "tpu_cores"),
    "num_tpu_cores": _devices_on("tpu", "num_tpu_cores"),
    "distributed_backend": lambda value: ({"strategy": value}, f"strategy={value!r}"),
    "progress_bar_refresh_rate": _progress_bar,
    "resume_from_checkpoint": lambda value: ({"ckpt_path": value}, "trainer.fit(model, ckpt_path=...)"),
    "weights_summary": _summary,
    "checkpoint_callback": lambda value: ({"enable_checkpointing": bool(value)}, f"enable_checkpointing={bool(value)}"),
}


def translate(flags: dict[str, Any]) -> dict[str, Any]:
    """Remove the classic flags from `flags` and return their modern equivalents (warning once each)."""
    modern: dict[str, Any] = {}
    for name in [name for name in flags if name in TRANSLATIONS]:
        value = flags.pop(name)
        updates, spelling = TRANSLATIONS[name](value)
        rank_zero_warn(f"Trainer({name}={value!r}) is the classic spelling; use {spelling} instead", DeprecationWarning)
        modern.update(updates)
    return modern
