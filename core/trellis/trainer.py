"""trellis.Trainer: chooses the plugins, attaches the module and runs the loops."""

from __future__ import annotations

import datetime
import difflib
import inspect
import math
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from trellis import checkpointing, classic_flags, discovery
from trellis.determinism import configure_determinism
from trellis.profilers import resolve_profiler
from trellis.callback_loading import resolve_callbacks
from trellis.callbacks.base import Callback
from trellis.distributed_data import distribute
from trellis.data import batch_limit, in_order, request_loaders, require_batches
from trellis.errors import ConfigurationError
from trellis.hook_manager import HookManager
from trellis.loops.evaluation import run_evaluation, run_prediction
from trellis.loops.fit import FitLoop, check_optimizers, takes_optimizer_index
from trellis.metrics import MetricStore
from trellis.preemption import Preempted, PreemptionHandler
from trellis.optim import OptimizerSetup, SchedulerConfig, parse_optimizers
from trellis.roles import Logger
from trellis.roles.strategy import TrainingSettings
from trellis.selection import resolve_loggers, select
from trellis.utils.durations import duration_seconds
from trellis.utils.rank_zero import rank_zero_info
from trellis.utils.rng import isolated_rng


class Trainer:
    """Runs fit, validate, test and predict for a trellis.Module with the chosen plugins."""

    def __init__(
        self,
        *,
        accelerator: Any = "auto",
        strategy: Any = "auto",
        devices: Any = "auto",
        num_nodes: int = 1,
        precision: Any = "32-true",
        logger: Any = True,
        callbacks: Sequence[Any] | Any | None = None,
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
        check_val_every_n_epoch: int = 1,
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
        accelerator = classic.get("accelerator", accelerator)
        devices = classic.get("devices", devices)
        strategy = classic.get("strategy", strategy)
        enable_progress_bar = classic.get("enable_progress_bar", enable_progress_bar)
        enable_model_summary = classic.get("enable_model_summary", enable_model_summary)
        enable_checkpointing = classic.get("enable_checkpointing", enable_checkpointing)
        #: resume_from_checkpoint (classic): the checkpoint fit resumes from when ckpt_path is not given.
        self.resume_from_checkpoint = classic.get("ckpt_path")
        self.fast_dev_run = int(fast_dev_run)
        if self.fast_dev_run:  # n batches of everything, once, with nothing written
            limit_train_batches = limit_val_batches = limit_test_batches = limit_predict_batches = self.fast_dev_run
            max_steps, max_epochs, num_sanity_val_steps, val_check_interval = self.fast_dev_run, 1, 0, 1.0
            logger, enable_checkpointing = False, False
        self.overfit_batches = overfit_batches
        if overfit_batches:
            limit_train_batches = limit_val_batches = overfit_batches
        self.reload_dataloaders_every_n_epochs = reload_dataloaders_every_n_epochs
        self.detect_anomaly = detect_anomaly
        configure_determinism(deterministic, benchmark)
        self.default_root_dir = os.fspath(default_root_dir) if default_root_dir else os.getcwd()
        self.max_steps = max_steps
        self.max_epochs = max_epochs if max_epochs is not None else (1000 if max_steps == -1 else -1)
        self.min_epochs, self.min_steps = min_epochs, min_steps
        self.max_time = duration_seconds(max_time)
        self.limits = {
            "train": limit_train_batches,
            "validation": limit_val_batches,
            "test": limit_test_batches,
            "predict": limit_predict_batches,
        }
        self.val_check_interval = val_check_interval
        self.check_val_every_n_epoch = check_val_every_n_epoch
        self.num_sanity_val_steps = num_sanity_val_steps
        self.log_every_n_steps = max(1, log_every_n_steps)
        if accumulate_grad_batches < 1:
            raise ConfigurationError(f"accumulate_grad_batches={accumulate_grad_batches}: pass 1 or more")
        self.accumulate_grad_batches = accumulate_grad_batches
        self.gradient_clip_val = gradient_clip_val
        self.gradient_clip_algorithm = gradient_clip_algorithm
        self.inference_mode = inference_mode
        self.use_distributed_sampler = use_distributed_sampler
        self.preemption = PreemptionHandler(self) if handle_preemption else None
        self.preemption_checkpoint_path = os.fspath(
            preemption_checkpoint or os.path.join(self.default_root_dir, "preempted.ckpt"))

        plugin_list = list(plugins) if isinstance(plugins, (list, tuple)) else ([plugins] if plugins is not None else [])
        selection = select(accelerator, strategy, devices, num_nodes, precision, plugin_list)
        self.strategy = selection.strategy
        self.accelerator = selection.accelerator
        self.precision_plugin = selection.precision
        self.hook_plugins = selection.hook_plugins
        self.loggers: list[Logger] = selection.loggers + resolve_loggers(logger, self.default_root_dir)
        self._user_callbacks = resolve_callbacks(callbacks)
        self._default_callbacks = _default_callbacks(
            enable_progress_bar, enable_model_summary, enable_checkpointing,
            classic.get("progress_bar_refresh_rate", 1), classic.get("model_summary_depth", 1))
        self.profiler = resolve_profiler(profiler)
        self.callbacks: list[Callback] = self._merge_callbacks([])
        self.hooks = HookManager()
        self.hooks.register_in_call_order([*self.hook_plugins, *self.callbacks])
        self.hooks.call("on_init_start", trainer=self)
        self.hooks.call("on_init_end", trainer=self)

        self.metrics = MetricStore(self.strategy.reduce)
        self.fit_loop = FitLoop(self)
        self.logged_metrics: dict[str, float] = {}
        self.module: Any = None
        self.datamodule: Any = None
        self.optimizers: list[torch.optim.Optimizer] = []
        self.lr_scheduler_configs: list[SchedulerConfig] = []
        self.should_stop = False
        self.sanity_checking = False
        self.state = "initializing"
        self.classic_optimizer_idx = False
        self.train_loader: Iterable | None = None
        self.val_loaders: list[Iterable] = []
        self.val_batch_limits: list[float] = []
        self.num_training_batches: float = math.inf
        self.val_check_batches = 0

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

    # -- what users read ----------------------------------------------------------------------
    @property
    def current_epoch(self) -> int:
        return self.fit_loop.epoch

    @property
    def global_step(self) -> int:
        return self.fit_loop.global_step

    @property
    def callback_metrics(self) -> dict[str, torch.Tensor]:
        return self.metrics.callback_metrics

    @property
    def progress_bar_metrics(self) -> dict[str, float]:
        return self.metrics.progress_bar_metrics()

    @property
    def global_rank(self) -> int:
        return self.strategy.global_rank

    @property
    def local_rank(self) -> int:
        return self.strategy.local_rank

    @property
    def node_rank(self) -> int:
        return self.strategy.node_rank

    @property
    def world_size(self) -> int:
        return self.strategy.world_size

    @property
    def is_global_zero(self) -> bool:
        return self.strategy.is_global_zero

    @property
    def logger(self) -> Logger | None:
        return self.loggers[0] if self.loggers else None

    @property
    def log_dir(self) -> str:
        """Directory of this run: the first logger's, else default_root_dir."""
        directory = self.logger.log_dir if self.logger is not None else None
        return directory or self.default_root_dir

    @property
    def lightning_module(self) -> Any:
        return self.module

    @property
    def model(self) -> Any:
        return self.module

    @property
    def checkpoint_callbacks(self) -> list[Callback]:
        return [callback for callback in self.callbacks if hasattr(callback, "best_model_path")]

    @property
    def checkpoint_callback(self) -> Callback | None:
        callbacks = self.checkpoint_callbacks
        return callbacks[0] if callbacks else None

    @property
    def training(self) -> bool:
        return self.state == "fitting" and not self.sanity_checking

    # -- entry points -------------------------------------------------------------------------
    def fit(
        self,
        model: Any,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        datamodule: Any = None,
        ckpt_path: str | os.PathLike | None = None,
    ) -> None:
        """Train `model`; ckpt_path resumes a run from a checkpoint (or "last")."""
        ckpt_path = ckpt_path if ckpt_path is not None else self.resume_from_checkpoint
        self._launch("fit", model, datamodule, {"train": train_dataloaders, "validation": val_dataloaders}, ckpt_path)

    def validate(self, model: Any = None, dataloaders: Any = None, ckpt_path: str | None = None,
                 datamodule: Any = None, verbose: bool = True) -> list[dict[str, float]]:
        return self._launch("validate", model, datamodule, {"validation": dataloaders}, ckpt_path, verbose)

    def test(self, model: Any = None, dataloaders: Any = None, ckpt_path: str | None = None,
             datamodule: Any = None, verbose: bool = True) -> list[dict[str, float]]:
        """Test; without a model after fit, the best checkpoint of that fit is loaded."""
        return self._launch("test", model, datamodule, {"test": dataloaders}, ckpt_path, verbose)

    def predict(self, model: Any = None, dataloaders: Any = None, datamodule: Any = None,
                ckpt_path: str | None = None) -> list[Any]:
        return self._launch("predict", model, datamodule, {"predict": dataloaders}, ckpt_path)

    def save_checkpoint(self, filepath: str | os.PathLike, weights_only: bool = False) -> None:
        """Write the full training state (or the weights alone) through the strategy's checkpoint IO."""
        if self.module is None:
            raise RuntimeError("save_checkpoint needs a module: call it during or after fit/validate/test")
        checkpoint = checkpointing.build_checkpoint(self, weights_only=weights_only)
        self.strategy.save_checkpoint(checkpoint, filepath)
        self.strategy.barrier("save_checkpoint")

    # -- running ------------------------------------------------------------------------------
    def _launch(self, stage: str, model: Any, datamodule: Any, loaders: dict[str, Any], ckpt_path: Any,
                verbose: bool = False) -> Any:
        if model is None:
            if self.module is None:
                raise ConfigurationError(f"trainer.{stage}() needs a model: trainer.{stage}(model)")
            model = self.module
            if ckpt_path is None and stage in ("validate", "test", "predict") and self.checkpoint_callback is not None:
                ckpt_path = "best" if getattr(self.checkpoint_callback, "best_model_path", "") else None
        launcher = self.strategy.launcher
        arguments = (stage, model, datamodule, loaders, ckpt_path, verbose)
        return launcher.launch(self._run, *arguments) if launcher is not None else self._run(*arguments)

    def _run(self, stage: str, module: Any, datamodule: Any, loaders: dict[str, Any], ckpt_path: Any,
             verbose: bool) -> Any:
        from trellis.module import Module

        if not isinstance(module, Module):
            raise ConfigurationError(
                f"the model is a {type(module).__name__}, not a trellis.Module: subclass trellis.Module "
                "(it is a torch.nn.Module with training_step and configure_optimizers)"
            )
        self.module, self.datamodule = module, datamodule
        module.trainer = self
        if datamodule is not None:
            datamodule.trainer = self
        self.state = {"fit": "fitting", "validate": "validating", "test": "testing", "predict": "predicting"}[stage]
        self.should_stop = False
        self.strategy.setup_environment()
        self.callbacks = self._merge_callbacks(module.configure_callbacks() or [])
        self.hooks = HookManager()
        monitoring = [callback for callback in self.callbacks if getattr(callback, "runs_last", False)]
        others = [callback for callback in self.callbacks if callback not in monitoring]
        # Lightning's order: callbacks, the datamodule and module, then monitoring callbacks (checkpoint,
        # early stopping) so that they see what the module's own epoch-end hooks logged.
        self.hooks.register_in_call_order(
            [self.profiler, *self.hook_plugins, *others, *self.loggers, datamodule, module, *monitoring])
        if self.profiler is not None:
            self.profiler.attach(self.hooks)
        lifecycle_stage = {"fit": "fit", "validate": "validate", "test": "test", "predict": "predict"}[stage]
        status = "failed"
        try:
            self._prepare_data()
            self.hooks.call("setup", trainer=self, pl_module=module, stage=lifecycle_stage)
            with self.strategy.model_init_context():
                module.configure_model()
            result = self._run_stage(stage, loaders, ckpt_path, verbose)
            status = "success"
            return result
        except BaseException as exception:
            status = "interrupted" if isinstance(exception, (KeyboardInterrupt, Preempted)) else "failed"
            self.hooks.call("on_exception", trainer=self, pl_module=module, exception=exception)
            raise
        finally:
            if self.is_global_zero:
                for logger in self.loggers:
                    logger.finalize(status)
            self.hooks.call("teardown", trainer=self, pl_module=module, stage=lifecycle_stage)
            self.strategy.teardown()
            self.state = "finished" if status == "success" else status

    def _prepare_data(self) -> None:
        """prepare_data on local rank zero only, then everyone waits."""
        if self.local_rank == 0:
            for source in (self.datamodule, self.module):
                if source is not None and hasattr(source, "prepare_data"):
                    source.prepare_data()
        self.strategy.barrier("prepare_data")

    def _run_stage(self, stage: str, loaders: dict[str, Any], ckpt_path: Any, verbose: bool) -> Any:
        module = self.module
        if stage == "fit":
            setup = self.strategy.setup(module, self._build_optimizers, settings=TrainingSettings(
                self.accumulate_grad_batches, self.gradient_clip_val, self.gradient_clip_algorithm))
            self.optimizers, self.lr_scheduler_configs = setup.optimizers, setup.schedulers
            self.classic_optimizer_idx = takes_optimizer_index(module)
            check_optimizers(module, self.optimizers, self.classic_optimizer_idx)
            if not module.automatic_optimization:
                for optimizer in self.optimizers:
                    optimizer.register_step_post_hook(self.fit_loop.count_manual_step)
            self._restore(ckpt_path, training_state=True)
            self._connect_fit_data(loaders)
            self._log_hyperparameters()
            self.hooks.call("on_fit_start", trainer=self, pl_module=module)
            if self.preemption is not None:
                self.preemption.install()
            try:
                with torch.autograd.set_detect_anomaly(self.detect_anomaly):
                    self.fit_loop.run()
            finally:
                if self.preemption is not None:
                    self.preemption.uninstall()
            self.hooks.call("on_fit_end", trainer=self, pl_module=module)
            return None
        self.strategy.setup(module, None)
        self._restore(ckpt_path, training_state=False)
        method = {"validate": "val_dataloader", "test": "test_dataloader", "predict": "predict_dataloader"}[stage]
        loop_stage = {"validate": "validation", "test": "test", "predict": "predict"}[stage]
        stage_loaders = [self._distribute(loader)
                         for loader in request_loaders(method, loaders[loop_stage], module, self.datamodule)]
        if not stage_loaders:
            raise ConfigurationError(
                f"trainer.{stage}() found no dataloader: pass dataloaders=..., a datamodule, or define "
                f"{method}() on the module"
            )
        limits = [batch_limit(loader, self.limits[loop_stage], f"limit_{'val' if loop_stage == 'validation' else loop_stage}_batches")
                  for loader in stage_loaders]
        if stage == "predict":
            return run_prediction(self, stage_loaders, limits)
        results = run_evaluation(self, loop_stage, stage_loaders, limits)
        if verbose and self.is_global_zero:
            for index, metrics in enumerate(results):
                rank_zero_info(f"{stage} results (dataloader {index}): " + ", ".join(
                    f"{name}={value:.6g}" for name, value in sorted(metrics.items())))
        return results

    def _log_hyperparameters(self) -> None:
        hyperparameters = {**(self.datamodule.hparams if hasattr(self.datamodule, "hparams") else {}),
                           **self.module.hparams_initial}
        if self.is_global_zero:
            for logger in self.loggers:
                logger.log_hyperparams(hyperparameters)

    def _build_optimizers(self) -> OptimizerSetup:
        return parse_optimizers(self.module.configure_optimizers())

    def _restore(self, ckpt_path: Any, training_state: bool) -> None:
        if ckpt_path is None:
            return
        path = self._checkpoint_path(ckpt_path)
        checkpoint = self.strategy.load_checkpoint(path)
        if training_state:
            checkpointing.restore_training_state(self, checkpoint)
        else:
            checkpointing.check_version(checkpoint)
            self.strategy.load_module_state_dict(checkpoint["state_dict"])

    def _checkpoint_path(self, ckpt_path: Any) -> str:
        if ckpt_path in ("best", "last"):
            callback = self.checkpoint_callback
            path = getattr(callback, f"{ckpt_path}_model_path", "") if callback is not None else ""
            if ckpt_path == "last":
                path = self._newest_existing([path, self.preemption_checkpoint_path])
            if not path:
                raise ConfigurationError(
                    f"ckpt_path={ckpt_path!r} but no {ckpt_path} checkpoint was saved by a ModelCheckpoint in this "
                    "trainer: pass the checkpoint's path"
                )
            return path
        return os.fspath(ckpt_path)

    def _newest_existing(self, paths: list[str]) -> str:
        """The newest of the paths that exist (through the checkpoint IO, so remote URLs count)."""
        existing = [path for path in paths if path and self.strategy.checkpoint_io.exists(path)]
        local = [path for path in existing if os.path.exists(path)]
        if len(local) == len(existing) > 1:
            return max(local, key=os.path.getmtime)
        return existing[0] if existing else ""

    def _connect_fit_data(self, loaders: dict[str, Any]) -> None:
        train = request_loaders("train_dataloader", loaders["train"], self.module, self.datamodule)
        if not train:
            raise ConfigurationError(
                "fit found no training dataloader: pass train_dataloaders=..., a datamodule, or define "
                "train_dataloader() on the module"
            )
        if len(train) > 1:
            raise ConfigurationError("fit takes one training dataloader; combine several into one dataset or loader")
        self._fit_loader_arguments = loaders
        self.train_loader = self._distribute(in_order(train[0]) if self.overfit_batches else train[0])
        self.num_training_batches = batch_limit(self.train_loader, self.limits["train"], "limit_train_batches")
        require_batches(self.num_training_batches, "training")
        has_validation_step = callable(getattr(self.module, "validation_step", None))
        self.val_loaders = [
            self._distribute(loader)
            for loader in request_loaders("val_dataloader", loaders["validation"], self.module, self.datamodule)
        ] if has_validation_step else []
        self.val_batch_limits = [batch_limit(loader, self.limits["validation"], "limit_val_batches")
                                 for loader in self.val_loaders]
        if self.val_loaders and not any(self.val_batch_limits):
            self.val_loaders = []
        self.val_check_batches = self._validation_interval()

    def _distribute(self, loader: Iterable) -> Iterable:
        """Insert a DistributedSampler when the strategy splits data (opt out: use_distributed_sampler=False)."""
        sampler_kwargs = self.strategy.distributed_sampler_kwargs
        if sampler_kwargs is None or not self.use_distributed_sampler:
            return loader
        return distribute(loader, sampler_kwargs)

    def _validation_interval(self) -> int:
        """Training batches between mid-epoch validations; 0 when validation runs at epoch end only."""
        interval = self.val_check_interval
        if isinstance(interval, float):
            if not 0.0 < interval <= 1.0:
                raise ConfigurationError(f"val_check_interval={interval}: a fraction lies in (0, 1]; an int counts batches")
            if interval == 1.0:
                return 0
            if math.isinf(self.num_training_batches):
                raise ConfigurationError("a fractional val_check_interval needs a training loader with a length")
            return max(1, int(self.num_training_batches * interval))
        return int(interval)

    # -- services for the loops ---------------------------------------------------------------
    def prepare_epoch(self, epoch: int) -> None:
        """Reload dataloaders when asked to; tell samplers which epoch starts (DistributedSampler reshuffles)."""
        every = self.reload_dataloaders_every_n_epochs
        if every and epoch and epoch % every == 0 and not self.fit_loop.batches_done:
            self._connect_fit_data(self._fit_loader_arguments)
        batch_sampler = getattr(self.train_loader, "batch_sampler", None)
        for candidate in (self.train_loader, getattr(self.train_loader, "sampler", None), batch_sampler,
                          getattr(batch_sampler, "sampler", None)):
            set_epoch = getattr(candidate, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(epoch)

    def strategy_cluster_environment(self) -> Any:
        """The cluster environment the strategy runs under, or the one detected from the environment."""
        from trellis.selection import detect_cluster_environment

        return getattr(self.strategy, "cluster_environment", None) or detect_cluster_environment()

    def validation_due_at_epoch_end(self, epoch: int) -> bool:
        if not self.val_loaders or (epoch + 1) % self.check_val_every_n_epoch != 0:
            return False
        interval = self.val_check_interval
        return isinstance(interval, float) or self.num_training_batches % interval == 0

    def run_validation(self, after_logging: Callable[[], None] | None = None) -> None:
        """Validate during fit without changing the RNG state training continues from."""
        if self.val_loaders:
            with isolated_rng():
                run_evaluation(self, "validation", self.val_loaders, self.val_batch_limits, after_logging=after_logging)
            self.metrics.stage = "train"

    def loss_from(self, outputs: Any) -> torch.Tensor | None:
        """The loss in what training_step returned: a tensor, a dict with "loss", or None."""
        if outputs is None or isinstance(outputs, torch.Tensor):
            return outputs
        if isinstance(outputs, dict):
            self.log_classic_result(outputs)
            if "loss" in outputs:
                return outputs["loss"]
        raise ConfigurationError(
            f"training_step returned a {type(outputs).__name__} without a loss: return the loss tensor, "
            "a dict with a 'loss' key, or None to skip the step"
        )

    def log_classic_result(self, result: Any) -> None:
        """Classic dict results: their "log" and "progress_bar" sub-dicts are logged."""
        if not isinstance(result, dict):
            return
        for key, prog_bar, logger in (("log", False, True), ("progress_bar", True, False)):
            for name, value in (result.get(key) or {}).items():
                self.module.log(name, value, prog_bar=prog_bar, logger=logger)

    def zero_grad(self, optimizer: torch.optim.Optimizer) -> None:
        caller = self.hooks.callers.get("on_before_zero_grad")
        if caller is not None:
            caller(trainer=self, pl_module=self.module, optimizer=optimizer)
        self.strategy.zero_grad(optimizer)

    def backward(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer | None) -> None:
        callers = self.hooks.callers
        if "on_before_backward" in callers:
            callers["on_before_backward"](trainer=self, pl_module=self.module, loss=loss)
        self.strategy.backward(loss, optimizer)
        if "on_after_backward" in callers:
            callers["on_after_backward"](trainer=self, pl_module=self.module)

    def optimizer_step(self, optimizer: torch.optim.Optimizer, optimizer_index: int) -> None:
        """Clip the gradients of one optimizer and step it (automatic optimization)."""
        callers = self.hooks.callers
        if "on_before_optimizer_step" in callers:
            callers["on_before_optimizer_step"](trainer=self, pl_module=self.module, optimizer=optimizer,
                                                optimizer_idx=optimizer_index)
        if self.gradient_clip_val:
            self.strategy.clip_gradients(optimizer, self.gradient_clip_val, self.gradient_clip_algorithm)
        self.strategy.optimizer_step(optimizer)

    def step_schedulers(self, interval: str) -> None:
        for config in self.lr_scheduler_configs:
            if config.interval != interval:
                continue
            count = self.global_step if interval == "step" else self.current_epoch + 1
            if count % config.frequency:
                continue
            if config.needs_metric:
                value = self.callback_metrics.get(config.monitor)
                if value is None:
                    if config.strict:
                        raise ConfigurationError(
                            f"ReduceLROnPlateau monitors {config.monitor!r}, which was not logged; available: "
                            f"{sorted(self.callback_metrics)}. Log it with self.log or set strict=False"
                        )
                    continue
                config.scheduler.step(float(value))
            else:
                config.scheduler.step()

    def log_to_loggers(self, metrics: dict[str, float]) -> None:
        if not metrics:
            return
        metrics = {**metrics, "epoch": self.current_epoch}
        self.logged_metrics.update(metrics)
        if self.is_global_zero:
            for logger in self.loggers:
                logger.log_metrics(metrics, step=self.global_step)

    # -- callbacks ----------------------------------------------------------------------------
    def _merge_callbacks(self, from_module: Sequence[Any]) -> list[Callback]:
        """User callbacks, replaced by the module's own of the same type; defaults only where none given."""
        module_types = {type(callback) for callback in from_module}
        chosen = [callback for callback in self._user_callbacks if type(callback) not in module_types]
        chosen += list(from_module)
        for default in self._default_callbacks:
            if not any(isinstance(callback, type(default)) for callback in chosen):
                chosen.append(default)
        return sorted(chosen, key=lambda callback: getattr(callback, "runs_last", False))


def _resolve_callbacks(callbacks: Any) -> list[Callback]:
    items = list(callbacks) if isinstance(callbacks, (list, tuple)) else ([callbacks] if callbacks is not None else [])
    return [discovery.load("callback", item)() if isinstance(item, str) else item for item in items]


def _default_callbacks(progress_bar: bool, summary: bool, checkpointing_enabled: bool, refresh_rate: int,
                       summary_depth: int) -> list[Callback]:
    from trellis.callbacks.model_checkpoint import ModelCheckpoint
    from trellis.callbacks.model_summary import ModelSummary
    from trellis.callbacks.progress_bar import ProgressBar

    enabled = ((progress_bar, lambda: ProgressBar(refresh_rate=refresh_rate)),
               (summary, lambda: ModelSummary(max_depth=summary_depth)), (checkpointing_enabled, ModelCheckpoint))
    return [make() for flag, make in enabled if flag]


def _unknown_flag_message(unknown: dict[str, Any]) -> str:
    known = [name for name in inspect.signature(Trainer.__init__).parameters if name not in ("self", "unknown")]
    parts = []
    for name in unknown:
        nearest = difflib.get_close_matches(name, known, n=1)
        parts.append(f"{name!r}" + (f" (did you mean {nearest[0]!r}?)" if nearest else ""))
    return f"Trainer got unknown flag(s) {', '.join(parts)}. Its flags are: {', '.join(known)}"
