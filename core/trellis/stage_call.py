"""One fit/validate/test/predict call: attach the module, wire the hooks, set up, run the loop, tear down.

A StageCall is what a strategy's launcher runs in every process. Launchers that run the work in other
processes (spawn) send `handoff()` from rank zero back and `adopt()` it in the launching process, so the
user's objects there end as trained as the workers' (a kernel-owned handoff: launchers never reach into
the Trainer).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch

from trellis import checkpoint_state
from trellis.errors import ConfigurationError
from trellis.fit_data import FitData, stage_loaders
from trellis.hook_manager import BoundHooks, HookManager
from trellis.loops.evaluation import run_evaluation, run_prediction
from trellis.optim import parse_optimizers
from trellis.preemption import Preempted, PreemptionHandler
from trellis.roles.strategy import TrainingSettings
from trellis.run import Run
from trellis.stages import PREDICT, EntryPoint, TrainerFn, TrainerStatus
from trellis.utils.rank_zero import rank_zero_info

if TYPE_CHECKING:
    from trellis.trainer import Trainer


class StageCall:
    """A Trainer entry point bound to its arguments, run by `__call__` (in each process)."""

    def __init__(self, trainer: Trainer, entry: EntryPoint, module: Any, datamodule: Any, loaders: dict[str, Any],
                 ckpt_path: Any, weights_only: bool, verbose: bool) -> None:
        self.trainer, self.entry, self.module, self.datamodule = trainer, entry, module, datamodule
        self.loaders, self.ckpt_path, self.weights_only, self.verbose = loaders, ckpt_path, weights_only, verbose

    def __call__(self) -> Any:
        from trellis.module import Module

        trainer, module, datamodule = self.trainer, self.module, self.datamodule
        if not isinstance(module, Module):
            raise ConfigurationError(
                f"the model is a {type(module).__name__}, not a trellis.Module: subclass trellis.Module "
                "(it is a torch.nn.Module with training_step and configure_optimizers)"
            )
        module.trainer = trainer
        if datamodule is not None:
            datamodule.trainer = trainer
        state = trainer.state
        state.fn, state.status, state.stage = self.entry.fn, TrainerStatus.RUNNING, self.entry.loop.running_stage
        strategy = trainer.strategy
        strategy.setup_environment()
        run = self._build_run()
        trainer._run = run
        run.metrics.start(run)
        status = TrainerStatus.INTERRUPTED
        try:
            self._prepare_data(run)
            run.hooks.fire("setup", stage=self.entry.verb)
            with strategy.model_init_context():
                module.configure_model()
            result = None
            if self.entry.fn == TrainerFn.FITTING:
                self._run_fit(run)
            else:
                result = self._run_evaluation(run)
            status = TrainerStatus.FINISHED
            return result
        except BaseException as exception:
            run.hooks.fire("on_exception", exception=exception)
            failed = not isinstance(exception, (KeyboardInterrupt, Preempted))
            self._finalize_loggers(run, "failed" if failed else "interrupted")
            raise
        finally:
            if status == TrainerStatus.FINISHED:
                self._finalize_loggers(run, "success")
            run.hooks.fire("teardown", stage=self.entry.verb)
            strategy.teardown()
            state.status, state.stage = status, None

    def _build_run(self) -> Run:
        trainer, module = self.trainer, self.module
        callbacks = trainer._callbacks_for(module)
        for callback in callbacks:  # as Lightning does: a callback's self.log is the module's
            callback.log, callback.log_dict = module.log, module.log_dict
        manager = HookManager()
        monitoring = [callback for callback in callbacks if getattr(callback, "runs_last", False)]
        others = [callback for callback in callbacks if callback not in monitoring]
        # Lightning's order: callbacks, the datamodule and module, then monitoring callbacks (checkpoint,
        # early stopping) so that they see what the module's own epoch-end hooks logged.
        manager.register_in_call_order([trainer.profiler, *trainer.hook_plugins, *others, *trainer.loggers,
                                        self.datamodule, module, *monitoring])
        if trainer.profiler is not None:
            trainer.profiler.attach(manager)
        return Run(
            entry=self.entry, trainer=trainer, module=module, datamodule=self.datamodule, strategy=trainer.strategy,
            settings=trainer.settings, hooks=BoundHooks(manager, trainer, module, trainer._metrics),
            metrics=trainer._metrics,
            log_sink=trainer._log_sink, state=trainer.state, callbacks=callbacks, fit_loop=trainer.fit_loop,
            save_checkpoint=trainer.save_checkpoint,
        )

    def _prepare_data(self, run: Run) -> None:
        """prepare_data on local rank zero only, then everyone waits."""
        if run.strategy.local_rank == 0:
            for source in (self.datamodule, self.module):
                if source is not None and hasattr(source, "prepare_data"):
                    source.prepare_data()
        run.strategy.barrier("prepare_data")

    # -- fit ----------------------------------------------------------------------------------------
    def _run_fit(self, run: Run) -> None:
        """Lightning's order: optimizers, the module's and callbacks' state, on_fit_start, hyperparameters to the
        loggers, the training state, then the loop."""
        module, settings = self.module, run.settings
        run.data = FitData(self.loaders, module, self.datamodule, run.strategy, settings)
        setup = run.strategy.setup(
            module, lambda: parse_optimizers(module.configure_optimizers(), module.automatic_optimization),
            settings=TrainingSettings(settings.accumulate_grad_batches, settings.gradient_clip_val,
                                      settings.gradient_clip_algorithm))
        if setup is None:
            raise RuntimeError(f"{type(run.strategy).__name__}.setup returned no optimizers for fit")
        run.optimizers, run.scheduler_configs = setup.optimizers, setup.schedulers
        checkpoint = self._load_checkpoint(run)
        if checkpoint is not None:
            checkpoint_state.restore_module(run, checkpoint, with_state=True)
        run.hooks.fire("on_fit_start")
        self._log_hyperparameters(run)
        if checkpoint is not None:
            checkpoint_state.restore_training_state(run, checkpoint)
        del checkpoint
        preemption = None
        if settings.handle_preemption:
            preemption = run.preemption = PreemptionHandler(
                run.strategy, settings.preemption_checkpoint_path, run.save_checkpoint)
            preemption.install()
        try:
            with torch.autograd.set_detect_anomaly(settings.detect_anomaly):
                run.fit_loop.run(run)
        finally:
            if preemption is not None:
                preemption.uninstall()
        run.hooks.fire("on_fit_end")

    def _load_checkpoint(self, run: Run) -> dict[str, Any] | None:
        path = checkpoint_state.resolve_path(run, self.ckpt_path) if self.ckpt_path is not None else None
        self.trainer.ckpt_path = path
        return checkpoint_state.load(run, path, self.weights_only) if path is not None else None

    def _log_hyperparameters(self, run: Run) -> None:
        """The module's and the DataModule's saved hyperparameters (those saved with logger=True), merged, to
        the loggers; a name both saved with different values is an error, as in Lightning."""
        if not run.loggers or not run.strategy.is_global_zero:
            return
        sources = [source for source in (self.module, self.datamodule)
                   if source is not None and getattr(source, "_log_hyperparams", False)]
        if not sources:
            return
        merged: dict[str, Any] = {}
        for source in sources:
            hparams = source.hparams_initial
            clashing = [key for key in hparams.keys() & merged.keys()
                        if key != "_class_path" and not _same_value(hparams[key], merged[key])]
            if clashing:
                raise ConfigurationError(
                    f"the module and the DataModule both saved the hyperparameters {sorted(clashing)} with different "
                    "values: rename them in one of the two, or leave them out of its save_hyperparameters(ignore=...)"
                )
            merged.update(hparams)
        merged.pop("_class_path", None)  # TrellisCLI's own entry
        for logger in run.loggers:
            logger.log_hyperparams(merged)

    # -- validate, test, predict --------------------------------------------------------------------
    def _run_evaluation(self, run: Run) -> Any:
        stage = self.entry.loop
        run.strategy.setup(self.module, None)
        checkpoint = self._load_checkpoint(run)
        if checkpoint is not None:
            checkpoint_state.restore_module(run, checkpoint, with_state=False)
        loaders, limits = stage_loaders(stage, self.loaders[stage.name], self.module, self.datamodule,
                                        run.strategy, run.settings)
        run.batch_limits = limits
        if not loaders:
            raise ConfigurationError(
                f"trainer.{self.entry.verb}() found no dataloader: pass dataloaders=..., a datamodule, or define "
                f"{stage.loader_method}() on the module"
            )
        if stage is PREDICT:
            return run_prediction(run, loaders, limits, self.trainer.predict_loop)
        results = run_evaluation(run, stage, loaders, limits)
        if self.verbose and run.strategy.is_global_zero:
            _print_results(self.entry.verb, results)
        return results

    @staticmethod
    def _finalize_loggers(run: Run, status: str) -> None:
        if run.strategy.is_global_zero:
            for logger in run.loggers:
                logger.finalize(status)

    # -- handoff to the launching process (spawn launchers) ------------------------------------------
    def handoff(self) -> dict[str, Any]:
        """What the launching process needs after the workers finished: weights, progress, metrics, and the
        checkpoint callbacks' paths, as CPU tensors and plain values."""
        trainer = self.trainer
        return {
            "module": {key: value.detach().cpu() for key, value in self.module.state_dict().items()},
            "fit_loop": trainer.fit_loop.state_dict(),
            "callback_metrics": {key: value.detach().cpu() for key, value in trainer.callback_metrics.items()},
            "logged_metrics": {key: value.detach().cpu() if isinstance(value, torch.Tensor) else value
                               for key, value in trainer.logged_metrics.items()},
            "checkpoint_paths": [
                {name: getattr(callback, name) for name in ("best_model_path", "last_model_path", "best_model_score")}
                for callback in trainer.checkpoint_callbacks
            ],
        }

    def adopt(self, state: dict[str, Any]) -> None:
        """Load what rank zero handed off into this process's module and trainer."""
        trainer = self.trainer
        self.module.load_state_dict(state["module"])
        trainer.fit_loop.load_state_dict(state["fit_loop"])
        trainer._metrics.callback_metrics = state["callback_metrics"]
        trainer._metrics.logged_metrics.update(state["logged_metrics"])
        for callback, paths in zip(trainer._callbacks_for(self.module), state["checkpoint_paths"]):
            for name, value in paths.items():
                setattr(callback, name, value)


def _same_value(first: Any, second: Any) -> bool:
    if type(first) is not type(second):
        return False
    if isinstance(first, torch.Tensor):
        return first is second
    return bool(first == second)


def _print_results(verb: str, results: Iterable[dict[str, float]]) -> None:
    for index, metrics in enumerate(results):
        rank_zero_info(f"{verb} results (dataloader {index}): " + ", ".join(
            f"{name}={value:.6g}" for name, value in sorted(metrics.items())))
