"""ModelCheckpoint: save the last and the best k checkpoints by a monitored metric, named as Lightning names them."""

from __future__ import annotations

import copy
import datetime
import os
import re
import shutil
import time
from typing import Any, Literal

import torch

from trellis.callbacks.checkpoint import Checkpoint
from trellis.callbacks.messages import info
from trellis.errors import ConfigurationError
from trellis.stages import TrainerFn
from trellis.utilities.rank_zero import rank_zero_warn
from trellis.utils.rank_zero import warn_once

#: a `{name}` or `{name:format}` field of a filename template.
_TEMPLATE_FIELD = re.compile(r"\{([^{}:]+)(:[^{}]*)?\}")


class ModelCheckpoint(Checkpoint):
    """Saves after validation (or at train epoch end without validation), every N steps, epochs or seconds.

    Files are named from `filename` (default "{epoch}-{step}"), filled with the current metrics
    ("{epoch:02d}-{val_loss:.2f}" gives "epoch=03-val_loss=0.12.ckpt"); a name already taken gets "-v1",
    "-v2", ... With `monitor`, the `save_top_k` best are kept (`best_k_models` maps their paths to scores,
    as tensors); without, the latest. `save_last` also keeps "last.ckpt" (a symbolic link with "link").
    """

    CHECKPOINT_JOIN_CHAR = "-"
    CHECKPOINT_EQUALS_CHAR = "="
    CHECKPOINT_NAME_LAST = "last"
    FILE_EXTENSION = ".ckpt"
    STARTING_VERSION = 1

    def __init__(
        self,
        dirpath: str | os.PathLike | None = None,
        filename: str | None = None,
        monitor: str | None = None,
        verbose: bool = False,
        save_last: bool | Literal["link"] | None = None,
        save_top_k: int = 1,
        save_on_exception: bool = False,
        save_weights_only: bool = False,
        mode: str = "min",
        auto_insert_metric_name: bool = True,
        every_n_train_steps: int | None = None,
        train_time_interval: datetime.timedelta | float | None = None,
        every_n_epochs: int | None = None,
        save_on_train_epoch_end: bool | None = None,
        enable_version_counter: bool = True,
    ) -> None:
        if mode not in ("min", "max"):
            raise ConfigurationError(f"`mode` can be min, max but got {mode}")
        self.monitor, self.mode, self.verbose = monitor, mode, verbose
        self.save_last, self.save_top_k = save_last, save_top_k
        self.save_on_exception, self.save_weights_only = save_on_exception, save_weights_only
        self.auto_insert_metric_name = auto_insert_metric_name
        self._save_on_train_epoch_end = save_on_train_epoch_end
        self._enable_version_counter = enable_version_counter
        self.dirpath = _absolute(dirpath) if dirpath else None
        self.filename = filename
        if every_n_train_steps is None and every_n_epochs is None and train_time_interval is None:
            every_n_epochs, every_n_train_steps = 1, 0
        if isinstance(train_time_interval, (int, float)):
            train_time_interval = datetime.timedelta(seconds=train_time_interval)
        self._every_n_train_steps: int = every_n_train_steps or 0
        self._every_n_epochs: int = every_n_epochs or 0
        self._train_time_interval: datetime.timedelta | None = train_time_interval
        self._check_configuration()
        #: path -> monitored score of the checkpoints kept (the k best).
        self.best_k_models: dict[str, torch.Tensor] = {}
        self.kth_best_model_path = ""
        #: the score a new checkpoint must beat once k are kept (inf/-inf until then).
        self.kth_value: torch.Tensor = torch.tensor(torch.inf if mode == "min" else -torch.inf)
        self.best_model_path = ""
        self.best_model_score: torch.Tensor | None = None
        self.current_score: torch.Tensor | None = None
        self.last_model_path = ""
        #: no checkpoint before the first optimizer step, and one per step at most.
        self._last_global_step_saved = 0
        self._last_checkpoint_saved = ""
        self._last_time_checked: float | None = None
        #: a step- or time-triggered save waits for validation to log the monitored metric.
        self._defer_save_until_validation = False
        #: a validation of this fit has finished (a missing monitored metric is then an error, not a warning).
        self._validation_ran = False

    def _check_configuration(self) -> None:
        if self.save_top_k < -1:
            raise ConfigurationError(f"Invalid value for save_top_k={self.save_top_k}. Must be >= -1")
        if self._every_n_train_steps < 0:
            raise ConfigurationError(
                f"Invalid value for every_n_train_steps={self._every_n_train_steps}. Must be >= 0")
        if self._every_n_epochs < 0:
            raise ConfigurationError(f"Invalid value for every_n_epochs={self._every_n_epochs}. Must be >= 0")
        triggers = ((self._every_n_train_steps >= 1) + (self._every_n_epochs >= 1)
                    + (self._train_time_interval is not None))
        if triggers > 1:
            raise ConfigurationError(
                f"Combination of parameters every_n_train_steps={self._every_n_train_steps}, every_n_epochs="
                f"{self._every_n_epochs} and train_time_interval={self._train_time_interval} should be mutually "
                "exclusive: use one ModelCheckpoint per trigger"
            )
        if self.monitor is None and self.save_top_k not in (-1, 0, 1):
            raise ConfigurationError(
                f"ModelCheckpoint(save_top_k={self.save_top_k}, monitor=None) is not a valid configuration: with no "
                "quantity to rank checkpoints by, save_top_k can be -1 (all), 0 (none) or 1 (the latest). Pass "
                "monitor='<logged metric>'"
            )
        if self.save_last == "link" and self.dirpath is not None and "://" in self.dirpath:
            raise ConfigurationError(
                f"ModelCheckpoint(save_last='link') is only supported for local file paths, got dirpath={self.dirpath}")

    @property
    def every_n_epochs(self) -> int:
        return self._every_n_epochs

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            monitor=self.monitor, mode=self.mode, every_n_train_steps=self._every_n_train_steps,
            every_n_epochs=self._every_n_epochs, train_time_interval=self._train_time_interval,
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "best_model_score": self.best_model_score,
            "best_model_path": self.best_model_path,
            "current_score": self.current_score,
            "dirpath": self.dirpath,
            "best_k_models": self.best_k_models,
            "kth_best_model_path": self.kth_best_model_path,
            "kth_value": self.kth_value,
            "last_model_path": self.last_model_path,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The kept checkpoints of the run this one resumes; only best_model_path when the directory changed."""
        saved_dirpath = state.get("dirpath", self.dirpath)
        if self.dirpath is None:  # resolved later from the run directory, which a resume continues
            self.dirpath = saved_dirpath
        if self.dirpath == saved_dirpath:
            self.best_model_score = state["best_model_score"]
            self.kth_best_model_path = state.get("kth_best_model_path", self.kth_best_model_path)
            self.kth_value = state.get("kth_value", self.kth_value)
            self.best_k_models = state.get("best_k_models", self.best_k_models)
            self.last_model_path = state.get("last_model_path", self.last_model_path)
        else:
            rank_zero_warn(
                f"The dirpath has changed from {saved_dirpath!r} to {self.dirpath!r}, therefore `best_model_score`, "
                "`kth_best_model_path`, `kth_value`, `last_model_path` and `best_k_models` won't be reloaded. Only "
                "`best_model_path` will be reloaded."
            )
        self.best_model_path = state["best_model_path"]

    # -- when (Lightning's triggers) ------------------------------------------------------------
    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        directory = self._resolve_dirpath(trainer)
        if (trainer.is_global_zero and self.save_top_k != 0 and trainer.ckpt_path is None
                and os.path.isdir(directory) and os.listdir(directory)):  # a resume continues its own directory
            rank_zero_warn(f"Checkpoint directory {directory} exists and is not empty.")
        self._validation_ran = False

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._last_time_checked = time.monotonic()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self._every_n_train_steps and self._train_time_interval is None:
            return
        skip_batch = self._every_n_train_steps < 1 or trainer.global_step % self._every_n_train_steps != 0
        skip_time = True
        now = time.monotonic()
        if self._train_time_interval is not None:
            previous = self._last_time_checked
            skip_time = previous is None or now - previous < self._train_time_interval.total_seconds()
            skip_time = trainer.strategy.broadcast(skip_time)  # one decision for every process
        if skip_batch and skip_time:
            return
        if not skip_time:
            self._last_time_checked = now
        candidates = self._monitor_candidates(trainer)
        if self.monitor is not None and (self.monitor not in candidates or self._validation_follows(trainer)):
            # the metric comes from validation (not logged yet, or stale with a validation right after this batch)
            self._defer_save_until_validation = True
            return
        if self._skips(trainer):
            return
        self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self._skips(trainer) or not self._saves_on_train_epoch_end(trainer):
            return
        candidates = self._monitor_candidates(trainer)
        if self._epoch_due(trainer):
            self._save_topk_checkpoint(trainer, candidates)
        if self._last_global_step_saved == trainer.global_step or (
                self.save_last == "link" and self._last_checkpoint_saved):
            self._save_last_checkpoint(trainer, candidates)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking and trainer.state.fn == TrainerFn.FITTING:
            self._validation_ran = True
        if self._skips(trainer) or self._saves_on_train_epoch_end(trainer):
            return
        candidates = self._monitor_candidates(trainer)
        if self._defer_save_until_validation:
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)
            self._defer_save_until_validation = False
            return
        if self._epoch_due(trainer):
            self._save_topk_checkpoint(trainer, candidates)
        if self._last_global_step_saved == trainer.global_step or (
                self.save_last == "link" and self._last_checkpoint_saved):
            self._save_last_checkpoint(trainer, candidates)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        """save_last=True keeps a last checkpoint even when no other was saved."""
        if self.save_last and not self._last_checkpoint_saved:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """save_on_exception=True: the state at the failure, under the usual name (and as last)."""
        if (not self.save_on_exception or trainer.fast_dev_run or trainer.sanity_checking
                or self._last_global_step_saved == trainer.global_step):
            return
        self._resolve_dirpath(trainer)
        candidates = self._monitor_candidates(trainer)
        path = self.format_checkpoint_name(candidates)
        self._save_checkpoint(trainer, path)
        self._save_last_checkpoint(trainer, candidates)
        info(f"An {type(exception).__name__} was raised with message: {exception}, saved checkpoint to {path}")

    def _skips(self, trainer: Any) -> bool:
        return (bool(trainer.fast_dev_run) or trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking
                or trainer.global_step == self._last_global_step_saved)

    def _saves_on_train_epoch_end(self, trainer: Any) -> bool:
        """At train epoch end when validation runs once per epoch (after its last batch) or not at all;
        otherwise after each validation."""
        if self._save_on_train_epoch_end is not None:
            return self._save_on_train_epoch_end
        schedule = trainer.validation_schedule
        return schedule is None or not schedule.enabled or schedule.at_epoch_end_only

    def _validation_follows(self, trainer: Any) -> bool:
        """Whether this is the epoch's last batch and a validation saving at its end runs right after it."""
        schedule = trainer.validation_schedule
        return (schedule is not None and not self._saves_on_train_epoch_end(trainer)
                and trainer.fit_loop.epoch_complete and schedule.epoch_due(trainer.current_epoch))

    def _epoch_due(self, trainer: Any) -> bool:
        return self._every_n_epochs >= 1 and (trainer.current_epoch + 1) % self._every_n_epochs == 0

    # -- what -----------------------------------------------------------------------------------
    def _resolve_dirpath(self, trainer: Any) -> str:
        """The directory given, else `<run directory>/checkpoints` (known once a resume restored the loggers)."""
        if self.dirpath is None:
            self.dirpath = os.path.join(trainer.log_dir, "checkpoints")
        return self.dirpath

    def _monitor_candidates(self, trainer: Any) -> dict[str, torch.Tensor]:
        """The callback metrics, with `epoch` and `step` as integer tensors (logged ones win, as ints)."""
        candidates = copy.deepcopy(dict(trainer.callback_metrics))
        epoch, step = candidates.get("epoch"), candidates.get("step")
        candidates["epoch"] = epoch.int() if isinstance(epoch, torch.Tensor) else torch.tensor(trainer.current_epoch)
        candidates["step"] = step.int() if isinstance(step, torch.Tensor) else torch.tensor(trainer.global_step)
        return candidates

    def _save_topk_checkpoint(self, trainer: Any, candidates: dict[str, torch.Tensor]) -> None:
        if self.save_top_k == 0:
            return
        self._resolve_dirpath(trainer)
        if self.monitor is None:
            self._save_none_monitor_checkpoint(trainer, candidates)
            return
        if self.monitor not in candidates:
            message = (f"`ModelCheckpoint(monitor={self.monitor!r})` could not find the monitored key in the returned "
                       f"metrics: {list(candidates)}. HINT: Did you call `log({self.monitor!r}, value)` in the "
                       "`LightningModule`?")
            if self._validation_ran:
                raise ConfigurationError(message)
            warn_once(message)
        self._save_monitor_checkpoint(trainer, candidates)

    def _save_none_monitor_checkpoint(self, trainer: Any, candidates: dict[str, torch.Tensor]) -> None:
        path = self._unused_path(trainer, candidates, self.best_model_path)
        previous, self.best_model_path = self.best_model_path, path  # set first: it is part of the saved state
        self._save_checkpoint(trainer, path)
        if self.save_top_k == 1 and previous and self._should_remove(trainer, previous, path):
            trainer.strategy.remove_checkpoint(previous)

    def _save_monitor_checkpoint(self, trainer: Any, candidates: dict[str, torch.Tensor]) -> None:
        current = candidates.get(self.monitor) if self.monitor is not None else None
        if self.check_monitor_top_k(trainer, current):
            assert current is not None
            self._update_best_and_save(current, trainer, candidates)
        elif self.verbose:
            info(f"Epoch {int(candidates['epoch']):d}, global step {int(candidates['step']):d}: "
                           f"{self.monitor!r} was not in top {self.save_top_k}")

    def check_monitor_top_k(self, trainer: Any, current: torch.Tensor | None = None) -> bool:
        """Whether a checkpoint scoring `current` belongs among the k best."""
        if current is None:
            return False
        if self.save_top_k == -1 or len(self.best_k_models) < self.save_top_k:
            return True
        better = torch.lt if self.mode == "min" else torch.gt
        return bool(better(current, self.best_k_models[self.kth_best_model_path]))

    def _update_best_and_save(self, current: torch.Tensor, trainer: Any, candidates: dict[str, torch.Tensor]) -> None:
        k = len(self.best_k_models) + 1 if self.save_top_k == -1 else self.save_top_k
        removed = None
        if len(self.best_k_models) == k and k > 0:
            removed = self.kth_best_model_path
            self.best_k_models.pop(removed)
        if isinstance(current, torch.Tensor) and torch.isnan(current):  # a NaN score ranks last
            current = torch.tensor(float("inf" if self.mode == "min" else "-inf"), device=current.device)
        path = self._unused_path(trainer, candidates, removed)
        self.current_score = current
        self.best_k_models[path] = current
        if len(self.best_k_models) == k:
            worst = max if self.mode == "min" else min
            self.kth_best_model_path = worst(self.best_k_models, key=self.best_k_models.__getitem__)
            self.kth_value = self.best_k_models[self.kth_best_model_path]
        best = min if self.mode == "min" else max
        self.best_model_path = best(self.best_k_models, key=self.best_k_models.__getitem__)
        self.best_model_score = self.best_k_models[self.best_model_path]
        if self.verbose:
            info(
                f"Epoch {int(candidates['epoch']):d}, global step {int(candidates['step']):d}: "
                f"{self.monitor!r} reached "
                f"{current:0.5f} (best {self.best_model_score:0.5f}), saving model to {path!r} as top {k}"
            )
        self._save_checkpoint(trainer, path)
        if removed and self._should_remove(trainer, removed, path):
            trainer.strategy.remove_checkpoint(removed)

    def _save_last_checkpoint(self, trainer: Any, candidates: dict[str, torch.Tensor]) -> None:
        if not self.save_last:
            return
        self._resolve_dirpath(trainer)
        path = self.format_checkpoint_name(candidates, self.CHECKPOINT_NAME_LAST)
        if self._enable_version_counter:
            version = self.STARTING_VERSION
            while self.file_exists(path, trainer) and path != self.last_model_path:
                path = self.format_checkpoint_name(candidates, self.CHECKPOINT_NAME_LAST, ver=version)
                version += 1
        previous, self.last_model_path = self.last_model_path, path  # set first: it is part of the saved state
        if self.save_last == "link" and self._last_checkpoint_saved and self.save_top_k != 0:
            self._link_checkpoint(trainer, self._last_checkpoint_saved, path)
        else:
            self._save_checkpoint(trainer, path)
        if previous and self._should_remove(trainer, previous, path):
            trainer.strategy.remove_checkpoint(previous)

    def _save_checkpoint(self, trainer: Any, path: str) -> None:
        trainer.save_checkpoint(path, self.save_weights_only)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = path
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_checkpoint(path)

    @staticmethod
    def _link_checkpoint(trainer: Any, target: str, link: str) -> None:
        """`link` becomes a relative symbolic link to `target` (a copy where links are not allowed)."""
        if trainer.is_global_zero and os.path.abspath(target) != os.path.abspath(link):
            if os.path.islink(link) or os.path.isfile(link):
                os.remove(link)
            elif os.path.isdir(link):
                shutil.rmtree(link)
            try:
                os.symlink(os.path.relpath(target, os.path.dirname(link)), link)
            except OSError:
                shutil.copy(target, link)
        trainer.strategy.barrier("link_checkpoint")

    def _should_remove(self, trainer: Any, previous: str, current: str) -> bool:
        """Never the file just written, the checkpoint this fit resumed from, or a file outside dirpath."""
        if previous == current:
            return False
        if "://" in previous:
            return True
        previous_path = os.path.abspath(previous)
        if trainer.ckpt_path is not None and previous_path == os.path.abspath(trainer.ckpt_path):
            return False
        directory = os.path.abspath(self.dirpath or "")
        return os.path.commonpath([directory, previous_path]) == directory and previous_path != directory

    def _unused_path(self, trainer: Any, candidates: dict[str, torch.Tensor], replaced: str | None) -> str:
        """The formatted name, with "-v1", "-v2", ... while that file exists (unless it is the one replaced)."""
        path = self.format_checkpoint_name(candidates)
        if self._enable_version_counter:
            version = self.STARTING_VERSION
            while self.file_exists(path, trainer) and path != replaced:
                path = self.format_checkpoint_name(candidates, ver=version)
                version += 1
        return path

    def file_exists(self, filepath: str | os.PathLike, trainer: Any) -> bool:
        """Whether the file exists, as rank zero sees it (every process takes the same decision)."""
        exists = trainer.strategy.checkpoint_io.exists(filepath) if trainer.is_global_zero else False
        return bool(trainer.strategy.broadcast(exists))

    def format_checkpoint_name(self, metrics: dict[str, Any], filename: str | None = None, ver: int | None = None,
                               prefix: str | None = None) -> str:
        """The path a checkpoint with these metrics gets: `filename` (or the callback's) filled in, e.g.
        "{epoch}-{val_loss:.2f}" -> "epoch=2-val_loss=0.12.ckpt" (a metric not given counts as 0)."""
        name = self._fill_template(filename or self.filename, dict(metrics))
        if prefix is not None:
            name = self.CHECKPOINT_JOIN_CHAR.join([prefix, name])
        if ver is not None:
            name = self.CHECKPOINT_JOIN_CHAR.join((name, f"v{ver}"))
        name += self.FILE_EXTENSION
        return os.path.join(self.dirpath, name) if self.dirpath else name

    def _fill_template(self, template: str | None, metrics: dict[str, Any]) -> str:
        template = template or "{epoch}" + self.CHECKPOINT_JOIN_CHAR + "{step}"

        def fill(match: re.Match) -> str:
            name, spec = match.group(1), (match.group(2) or ":")[1:]
            text = format(metrics.get(name, torch.tensor(0)), spec)
            return f"{name}{self.CHECKPOINT_EQUALS_CHAR}{text}" if self.auto_insert_metric_name else text

        return _TEMPLATE_FIELD.sub(fill, template)

    def to_yaml(self, filepath: str | os.PathLike | None = None) -> None:
        """Write best_k_models (path: score) to a YAML file, by default best_k_models.yaml in dirpath."""
        import yaml

        best_k = {path: float(score) for path, score in self.best_k_models.items()}
        target = filepath if filepath is not None else os.path.join(self.dirpath or ".", "best_k_models.yaml")
        with open(target, "w") as file:
            yaml.dump(best_k, file)


def _absolute(dirpath: str | os.PathLike) -> str:
    """A local directory as an absolute real path; a URL (s3://, memory://, file://) as given."""
    path = os.fspath(dirpath)
    return path if "://" in path else os.path.realpath(os.path.expanduser(path))
