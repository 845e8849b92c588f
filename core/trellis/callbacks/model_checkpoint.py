"""ModelCheckpoint: save the last and the best k checkpoints by a monitored metric."""

from __future__ import annotations

import math
import os
import re
import time
from typing import Any

from trellis.callbacks.base import Callback
from trellis.errors import ConfigurationError
from trellis.stages import TrainerFn

_TEMPLATE_FIELD = re.compile(r"\{([^{}:]+)(:[^{}]*)?\}")


class ModelCheckpoint(Callback):
    """Saves after validation (or at train epoch end without validation), every N steps or epochs."""

    runs_last = True
    CHECKPOINT_EXTENSION = ".ckpt"

    def __init__(
        self,
        dirpath: str | os.PathLike | None = None,
        filename: str | None = None,
        monitor: str | None = None,
        mode: str = "min",
        save_top_k: int = 1,
        save_last: bool | None = None,
        every_n_train_steps: int | None = None,
        every_n_epochs: int | None = None,
        train_time_interval: float | None = None,
        save_weights_only: bool = False,
        auto_insert_metric_name: bool = True,
        save_on_train_epoch_end: bool | None = None,
    ) -> None:
        if mode not in ("min", "max"):
            raise ConfigurationError(f"ModelCheckpoint(mode={mode!r}): use 'min' or 'max'")
        if save_top_k < -1:
            raise ConfigurationError(f"ModelCheckpoint(save_top_k={save_top_k}): use -1 (all), 0 (none) or a count")
        self.dirpath = os.fspath(dirpath) if dirpath is not None else None
        self.filename = filename
        self.monitor, self.mode = monitor, mode
        self.save_top_k, self.save_last = save_top_k, save_last
        self.every_n_train_steps = every_n_train_steps or 0
        self.every_n_epochs = every_n_epochs if every_n_epochs is not None else (0 if every_n_train_steps or train_time_interval else 1)
        self.train_time_interval = train_time_interval
        self.save_weights_only = save_weights_only
        self.auto_insert_metric_name = auto_insert_metric_name
        #: path -> monitored score of the kept best checkpoints.
        self.best_k_models: dict[str, float] = {}
        self.best_model_path = ""
        self.best_model_score: float | None = None
        self.last_model_path = ""
        self.save_on_train_epoch_end = save_on_train_epoch_end
        #: no checkpoint before the first optimizer step, and one per step at most.
        self._last_saved_step = 0
        self._last_time = time.monotonic()

    @property
    def state_key(self) -> str:
        return f"ModelCheckpoint{{monitor={self.monitor!r}, mode={self.mode!r}, every_n_train_steps={self.every_n_train_steps}, every_n_epochs={self.every_n_epochs}}}"

    def state_dict(self) -> dict[str, Any]:
        return {
            "dirpath": self.dirpath,
            "best_k_models": dict(self.best_k_models),
            "best_model_path": self.best_model_path,
            "best_model_score": self.best_model_score,
            "last_model_path": self.last_model_path,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.dirpath is None:
            self.dirpath = state.get("dirpath")
        if state.get("dirpath") == self.dirpath:
            self.best_k_models = dict(state["best_k_models"])
            self.best_model_path = state["best_model_path"]
            self.best_model_score = state["best_model_score"]
            self.last_model_path = state["last_model_path"]

    # -- when (Lightning's triggers) ------------------------------------------------------------
    def on_train_batch_end(self, trainer: Any) -> None:
        if not self.every_n_train_steps and self.train_time_interval is None:
            return
        due_by_steps = self.every_n_train_steps and trainer.global_step % self.every_n_train_steps == 0
        due_by_time = self.train_time_interval is not None and time.monotonic() - self._last_time >= self.train_time_interval
        if (due_by_steps or due_by_time) and not self._skips(trainer):
            self._save(trainer)

    def on_train_epoch_end(self, trainer: Any) -> None:
        if not self._skips(trainer) and self._saves_on_train_epoch_end(trainer) and self._epoch_due(trainer):
            self._save(trainer)

    def on_validation_end(self, trainer: Any) -> None:
        if not self._skips(trainer) and not self._saves_on_train_epoch_end(trainer) and self._epoch_due(trainer):
            self._save(trainer)

    def _skips(self, trainer: Any) -> bool:
        return (bool(trainer.fast_dev_run) or trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking
                or trainer.global_step == self._last_saved_step)

    def _saves_on_train_epoch_end(self, trainer: Any) -> bool:
        """At train epoch end when validation runs once per epoch (after its last batch) or not at all;
        otherwise after each validation."""
        if self.save_on_train_epoch_end is not None:
            return self.save_on_train_epoch_end
        schedule = trainer.validation_schedule
        return schedule is None or not schedule.enabled or schedule.at_epoch_end_only

    def _epoch_due(self, trainer: Any) -> bool:
        return bool(self.every_n_epochs) and (trainer.current_epoch + 1) % self.every_n_epochs == 0

    # -- what ---------------------------------------------------------------------------------
    def _save(self, trainer: Any) -> None:
        if self.dirpath is None:  # resolved now, after a resume has restored the logger's run directory
            self.dirpath = os.path.join(trainer.log_dir, "checkpoints")
        self._last_saved_step = trainer.global_step
        self._last_time = time.monotonic()
        metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
        metrics.update(epoch=trainer.current_epoch, step=trainer.global_step)
        if self.save_top_k != 0:
            self._save_top_k(trainer, metrics)
        if self.save_last:
            self._save_last(trainer, metrics)

    def _save_top_k(self, trainer: Any, metrics: dict[str, float]) -> None:
        if self.monitor is None:
            path = self._path(metrics, self.filename)
            self._write(trainer, path)
            previous = [old for old in self.best_k_models if old != path]
            self.best_k_models = {path: float(metrics["step"])}
            self.best_model_path = path
            if self.save_top_k == 1:
                for old in previous:
                    trainer.strategy.remove_checkpoint(old)
            return
        if self.monitor not in metrics:
            raise ConfigurationError(
                f"ModelCheckpoint(monitor={self.monitor!r}) found no such metric; logged metrics are "
                f"{sorted(name for name in metrics if name not in ('epoch', 'step'))}. Log it with self.log"
            )
        score = metrics[self.monitor]
        if math.isnan(score):
            return
        if self.save_top_k != -1 and len(self.best_k_models) >= self.save_top_k and not self._better(score, self._worst()[1]):
            return
        path = self._path(metrics, self.filename)
        self._write(trainer, path)
        self.best_k_models[path] = score
        if self.save_top_k != -1 and len(self.best_k_models) > self.save_top_k:
            worst_path, _ = self._worst()
            del self.best_k_models[worst_path]
            if worst_path != path:
                trainer.strategy.remove_checkpoint(worst_path)
        pick = min if self.mode == "min" else max
        self.best_model_path = pick(self.best_k_models, key=self.best_k_models.__getitem__)
        self.best_model_score = self.best_k_models[self.best_model_path]

    def _save_last(self, trainer: Any, metrics: dict[str, float]) -> None:
        path = os.path.join(self.dirpath, "last" + self.CHECKPOINT_EXTENSION)
        self._write(trainer, path)
        self.last_model_path = path

    def _worst(self) -> tuple[str, float]:
        pick = max if self.mode == "min" else min
        path = pick(self.best_k_models, key=self.best_k_models.__getitem__)
        return path, self.best_k_models[path]

    def _better(self, score: float, than: float) -> bool:
        return score < than if self.mode == "min" else score > than

    def _write(self, trainer: Any, path: str) -> None:
        trainer.save_checkpoint(path, weights_only=self.save_weights_only)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_checkpoint(path)

    def _path(self, metrics: dict[str, float], template: str | None) -> str:
        """Fill a filename template such as "{epoch}-{val_loss:.2f}" with the current metrics."""
        template = template or "{epoch}-{step}"

        def fill(match: re.Match) -> str:
            name, spec = match.group(1), match.group(2) or ""
            value = metrics.get(name, float("nan"))
            if name in ("epoch", "step") and not spec:
                value = int(value)
            text = format(value, spec[1:]) if spec else str(value)
            return f"{name}={text}" if self.auto_insert_metric_name else text

        name = _TEMPLATE_FIELD.sub(fill, template).replace("/", "_")
        return os.path.join(self.dirpath, name + self.CHECKPOINT_EXTENSION)

