"""trellis.Trainer: turns flags into settings and plugins, and runs fit, validate, test and predict."""

from __future__ import annotations

import contextlib
import datetime
import difflib
import inspect
import os
from collections.abc import Iterator, Sequence
from typing import Any

from trellis import checkpoint_state, classic_flags
from trellis.callbacks.base import Callback
from trellis.callbacks.selection import CallbackSet
from trellis.determinism import configure_determinism
from trellis.errors import ConfigurationError
from trellis.hook_manager import HookManager
from trellis.loops.evaluation import PredictLoop
from trellis.loops.fit import FitLoop
from trellis.metrics import MetricStore
from trellis.profilers import resolve_profiler
from trellis.roles import Accelerator, Logger, Precision, Strategy
from trellis.run import LogSink, Run
from trellis.selection import resolve_loggers, select
from trellis.settings import TrainerSettings, build_settings
from trellis.stage_call import StageCall
from trellis.stages import (
    FIT,
    PREDICT_ENTRY,
    TEST_ENTRY,
    VALIDATE,
    EntryPoint,
    TrainerFn,
    TrainerState,
)
from trellis.trainer_properties import TrainerProperties
from trellis.utils.collections import as_list
from trellis.utils.rank_zero import rank_zero_warn
from trellis.utils.tensor_init import SkippedInit, default_dtype


class Trainer(TrainerProperties):
    """Runs fit, validate, test and predict for a trellis.Module with the chosen plugins.

    Every flag is also readable as an attribute (`trainer.max_epochs`, `trainer.limit_val_batches`).
    """

    def __init__(
        self,
        *,
        accelerator: str | Accelerator = "auto",
        strategy: str | Strategy = "auto",
        devices: int | str | Sequence[int] = "auto",
        num_nodes: int = 1,
        precision: str | int | Precision = "32-true",
        logger: bool | str | Logger | Sequence[str | Logger] | None = True,
        callbacks: Sequence[Callback | str] | Callback | str | None = None,
        plugins: Sequence[Any] | Any | None = None,
        max_epochs: int | None = None,
        min_epochs: int | None = None,
        max_steps: int = -1,
        min_steps: int | None = None,
        max_time: float | str | datetime.timedelta | dict | None = None,
        limit_train_batches: int | float = 1.0,
        limit_val_batches: int | float = 1.0,
        limit_test_batches: int | float = 1.0,
        limit_predict_batches: int | float = 1.0,
        val_check_interval: int | float = 1.0,
        check_val_every_n_epoch: int | None = 1,
        num_sanity_val_steps: int = 2,
        log_every_n_steps: int = 50,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
        enable_progress_bar: bool = True,
        enable_model_summary: bool = True,
        enable_checkpointing: bool = True,
        default_root_dir: str | os.PathLike | None = None,
        inference_mode: bool = True,
        use_distributed_sampler: bool = True,
        handle_preemption: bool = True,
        preemption_checkpoint: str | os.PathLike | None = None,
        fast_dev_run: bool | int = False,
        overfit_batches: int | float = 0.0,
        reload_dataloaders_every_n_epochs: int = 0,
        deterministic: bool | str | None = None,
        benchmark: bool | None = None,
        detect_anomaly: bool = False,
        profiler: str | Any | None = None,
        **unknown: Any,
    ) -> None:
        classic = classic_flags.translate(unknown)
        if unknown:
            raise ConfigurationError(_unknown_flag_message(unknown))
        #: resume_from_checkpoint (classic): the checkpoint fit resumes from when ckpt_path is not given.
        self.resume_from_checkpoint = classic.get("ckpt_path")
        self.settings: TrainerSettings = build_settings(
            fast_dev_run=fast_dev_run, overfit_batches=overfit_batches, max_epochs=max_epochs, max_steps=max_steps,
            min_epochs=min_epochs, min_steps=min_steps, max_time=max_time, limit_train_batches=limit_train_batches,
            limit_val_batches=limit_val_batches, limit_test_batches=limit_test_batches,
            limit_predict_batches=limit_predict_batches, val_check_interval=val_check_interval,
            num_sanity_val_steps=num_sanity_val_steps, accumulate_grad_batches=accumulate_grad_batches,
            log_every_n_steps=log_every_n_steps, default_root_dir=default_root_dir,
            preemption_checkpoint=preemption_checkpoint, check_val_every_n_epoch=check_val_every_n_epoch,
            gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm,
            inference_mode=inference_mode, use_distributed_sampler=use_distributed_sampler,
            reload_dataloaders_every_n_epochs=reload_dataloaders_every_n_epochs, detect_anomaly=detect_anomaly,
            handle_preemption=handle_preemption,
        )
        configure_determinism(deterministic, benchmark)
        if self.settings.fast_dev_run:  # n batches of everything, once, with nothing written
            logger, enable_checkpointing = False, False
        plugin_list = as_list(plugins)
        selection = select(classic.get("accelerator", accelerator), classic.get("strategy", strategy),
                           classic.get("devices", devices), num_nodes, precision, plugin_list)
        self.strategy = selection.strategy
        self.accelerator = selection.accelerator
        self.precision_plugin = selection.precision
        self.hook_plugins = selection.hook_plugins
        self.loggers = selection.loggers + resolve_loggers(logger, self.settings.default_root_dir)
        self._callback_set = CallbackSet(
            callbacks, classic.get("enable_progress_bar", enable_progress_bar),
            classic.get("enable_model_summary", enable_model_summary),
            classic.get("enable_checkpointing", enable_checkpointing),
            classic.get("progress_bar_refresh_rate", 1), classic.get("model_summary_depth", 1), self.settings.max_time)
        self.profiler = resolve_profiler(profiler)
        init_hooks = HookManager()
        init_hooks.register_in_call_order([*self.hook_plugins, *self._callback_set.for_module(None)])
        init_hooks.call("on_init_start", trainer=self)
        init_hooks.call("on_init_end", trainer=self)
        self.state = TrainerState()
        self.fit_loop = FitLoop(self.settings)
        self.predict_loop = PredictLoop()
        self._metrics = MetricStore(self.strategy.reduce)
        self._log_sink = LogSink(self.loggers, self._metrics)
        self._run: Run | None = None
        self._module: Any = None
        self._datamodule: Any = None
        #: the checkpoint the last fit/validate/test/predict loaded (resolved from "last"/"best"), or None.
        self.ckpt_path: str | None = None

    def __getattr__(self, name: str) -> Any:
        """Flags read as attributes (`trainer.limit_val_batches`), from the frozen settings."""
        settings = self.__dict__.get("settings")
        if settings is not None and name in TrainerSettings.__dataclass_fields__:
            return getattr(settings, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @classmethod
    def add_argparse_args(cls, parent_parser: Any) -> Any:
        """Classic argparse scripts: add every Trainer flag to `parent_parser`."""
        from trellis.argparse_support import add_argparse_args

        return add_argparse_args(parent_parser, cls)

    @classmethod
    def from_argparse_args(cls, args: Any, **overrides: Any) -> Trainer:
        """Classic argparse scripts: a Trainer from parsed arguments (with overrides)."""
        from trellis.argparse_support import from_argparse_args

        return from_argparse_args(args, cls, **overrides)

    # -- entry points -------------------------------------------------------------------------
    def fit(self, model: Any, train_dataloaders: Any = None, val_dataloaders: Any = None, datamodule: Any = None,
            ckpt_path: str | os.PathLike | None = None, weights_only: bool | None = None) -> None:
        """Train `model`; ckpt_path resumes a run from a checkpoint (a path, "last" or "best").

        A DataModule may come second (`fit(model, dm)`). weights_only=False also loads checkpoints that hold
        arbitrary Python objects: only for files you trust.
        """
        if _is_datamodule(train_dataloaders):
            datamodule, train_dataloaders = train_dataloaders, None
        ckpt_path = ckpt_path if ckpt_path is not None else self.resume_from_checkpoint
        self._launch(FIT, model, datamodule, {"train": train_dataloaders, "validation": val_dataloaders}, ckpt_path,
                     weights_only)

    def validate(self, model: Any = None, dataloaders: Any = None, ckpt_path: str | os.PathLike | None = None,
                 verbose: bool = True, datamodule: Any = None,
                 weights_only: bool | None = None) -> list[dict[str, float]]:
        """One validation pass; returns each loader's metrics."""
        return self._evaluate(VALIDATE, "validation", model, dataloaders, ckpt_path, verbose, datamodule, weights_only)

    def test(self, model: Any = None, dataloaders: Any = None, ckpt_path: str | os.PathLike | None = None,
             verbose: bool = True, datamodule: Any = None, weights_only: bool | None = None) -> list[dict[str, float]]:
        """Test; without a model after fit, the best checkpoint of that fit is loaded."""
        return self._evaluate(TEST_ENTRY, "test", model, dataloaders, ckpt_path, verbose, datamodule, weights_only)

    def predict(self, model: Any = None, dataloaders: Any = None, datamodule: Any = None,
                return_predictions: bool | None = None, ckpt_path: str | os.PathLike | None = None,
                weights_only: bool | None = None) -> list[Any] | None:
        """predict_step over the loaders; returns the predictions (unless return_predictions=False)."""
        self.predict_loop.return_predictions = return_predictions is not False
        return self._evaluate(PREDICT_ENTRY, "predict", model, dataloaders, ckpt_path, False, datamodule, weights_only)

    def _evaluate(self, entry: EntryPoint, stage: str, model: Any, dataloaders: Any, ckpt_path: Any, verbose: bool,
                  datamodule: Any, weights_only: bool | None) -> Any:
        if _is_datamodule(dataloaders):
            datamodule, dataloaders = dataloaders, None
        return self._launch(entry, model, datamodule, {stage: dataloaders}, ckpt_path, weights_only, verbose)

    def save_checkpoint(self, filepath: str | os.PathLike, weights_only: bool = False) -> None:
        """Write the full training state (or the weights alone) through the strategy's checkpoint IO."""
        if self._run is None:
            raise RuntimeError("save_checkpoint needs a module: call it during or after fit/validate/test")
        self.fit_loop.check_finite_loss()  # never a checkpoint from a step whose loss was NaN or inf
        checkpoint = checkpoint_state.build_checkpoint(self._run, weights_only=weights_only)
        self.strategy.save_checkpoint(checkpoint, filepath)
        self.strategy.barrier("save_checkpoint")

    def _launch(self, entry: EntryPoint, model: Any, datamodule: Any, loaders: dict[str, Any], ckpt_path: Any,
                weights_only: bool | None, verbose: bool = False) -> Any:
        if model is None:
            if self._module is None:
                raise ConfigurationError(f"trainer.{entry.verb}() needs a model: trainer.{entry.verb}(model)")
            model = self._module
            best = getattr(self.checkpoint_callback, "best_model_path", None)
            if ckpt_path is None and entry.fn != TrainerFn.FITTING and best:
                ckpt_path = "best"
        self._module, self._datamodule = model, datamodule
        call = StageCall(self, entry, model, datamodule, loaders, ckpt_path, weights_only is not False, verbose)
        launcher = self.strategy.launcher
        return launcher.launch(call) if launcher is not None else call()

    def _current_run(self, action: str) -> Run:
        if self._run is None:
            raise RuntimeError(f"cannot {action} before fit/validate/test/predict has started")
        return self._run

    def _callbacks_for(self, module: Any) -> list[Callback]:
        return self._callback_set.for_module(module)

    def print(self, *args: Any, **kwargs: Any) -> None:
        """print() on the first process of each machine (local rank zero)."""
        if self.local_rank == 0:
            print(*args, **kwargs)

    @contextlib.contextmanager
    def init_module(self, empty_init: bool | None = None) -> Iterator[None]:
        """Build the module inside: its tensors are created on the strategy's device in the precision's dtype
        right away, instead of on the CPU in float32 and then moved. empty_init=True leaves the weights
        uninitialised (torch.nn.init does nothing), for a model whose weights a checkpoint will replace."""
        strategy = self.strategy
        sharded = type(strategy).model_init_context is not Strategy.model_init_context
        if sharded:
            rank_zero_warn(
                f"trainer.init_module() builds the whole model in each process with the {type(strategy).__name__}, "
                "before it shards it: create the layers in the module's configure_model() instead to have them "
                "created sharded"
            )
        with contextlib.ExitStack() as stack:
            stack.enter_context(SkippedInit(enabled=bool(empty_init)))
            if not sharded:
                stack.enter_context(strategy.root_device)
            stack.enter_context(default_dtype(strategy.precision.param_dtype))
            yield


def _is_datamodule(value: Any) -> bool:
    from trellis.datamodule import DataModule

    return isinstance(value, DataModule)


def _unknown_flag_message(unknown: dict[str, Any]) -> str:
    known = [name for name in inspect.signature(Trainer.__init__).parameters if name not in ("self", "unknown")]
    parts = []
    for name in unknown:
        nearest = difflib.get_close_matches(name, known, n=1)
        parts.append(f"{name!r}" + (f" (did you mean {nearest[0]!r}?)" if nearest else ""))
    return f"Trainer got unknown flag(s) {', '.join(parts)}. Its flags are: {', '.join(known)}"
