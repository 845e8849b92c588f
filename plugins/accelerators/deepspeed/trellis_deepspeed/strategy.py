"""strategy="deepspeed": DeepSpeed's engine owns the model, backward, the optimizer step and checkpoints."""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import shutil
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch

from trellis.errors import CheckpointError, ConfigurationError
from trellis.plugin import (
    DEFAULT_TIMEOUT,
    ClusterEnvironment,
    OptimizerSetup,
    ParallelStrategy,
    StepRunner,
    TrainingSettings,
    apply_to_tensors,
)
from trellis_deepspeed import checkpoint as ds_checkpoint
from trellis_deepspeed import config as ds_config
from trellis_deepspeed.environment import DeepSpeedLauncherEnvironment

if TYPE_CHECKING:
    from trellis.plugin import PathLike

_HALF_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class DeepSpeedStrategy(ParallelStrategy):
    """Data parallel training with ZeRO (stages 1, 2, 3) and CPU offload through DeepSpeed.

    The config comes from `config` (a dict or a JSON file path) and the keyword arguments; the Trainer's
    precision, accumulate_grad_batches and gradient_clip_val are written into it, and the micro batch
    size is read from the training dataloader unless the config fixes it. Processes come as DDP's do:
    from a cluster launcher (torchrun, srun, DeepSpeed's own `deepspeed`) or from re-running the script.
    """

    name = "deepspeed"

    def __init__(
        self,
        stage: int | None = None,
        *,
        config: ds_config.ConfigSource = None,
        offload_optimizer: bool = False,
        offload_parameters: bool = False,
        micro_batch_size: int | None = None,
        logging_level: int = logging.WARNING,
        timeout: float | datetime.timedelta = DEFAULT_TIMEOUT,
        cluster_environment: ClusterEnvironment | None = None,
        **zero_options: Any,
    ) -> None:
        """`zero_options`: any other key of the config's zero_optimization section."""
        super().__init__(timeout=timeout, cluster_environment=cluster_environment)
        user_config = ds_config.read_config(config)
        options: dict[str, Any] = {"stage": stage, **zero_options}
        if offload_optimizer:
            options["offload_optimizer"] = {"device": "cpu"}
        if offload_parameters:
            options["offload_param"] = {"device": "cpu"}
        if stage is None and "stage" not in user_config.get("zero_optimization", {}):
            options["stage"] = 2
        self.config = ds_config.merge_zero_options(user_config, options)
        if micro_batch_size is not None:
            self.config["train_micro_batch_size_per_gpu"] = micro_batch_size
        if "offload_param" in self.config["zero_optimization"] and self.zero_stage != 3:
            raise ConfigurationError(
                f"parameter offload needs ZeRO stage 3, but the stage is {self.zero_stage}: pass stage=3"
            )
        self.logging_level = logging_level
        #: the DeepSpeed engine, once setup() built it.
        self.engine: Any = None
        self._micro_batch_from_loader = ds_config.micro_batch_from_config(self.config) is None
        self._clip_value: float | None = None

    @property
    def zero_stage(self) -> int:
        return ds_config.zero_stage(self.config)

    # -- wiring and processes -----------------------------------------------------------------
    def connect(self, accelerator, precision, checkpoint_io, devices, num_nodes) -> None:  # noqa: ANN001
        ds_config.check_precision(precision.name or "32-true")
        super().connect(accelerator, precision, checkpoint_io, devices, num_nodes)

    def choose_environment(self) -> ClusterEnvironment:
        """DeepSpeed's own launcher is recognised here; every other launcher as for any process-group strategy."""
        return DeepSpeedLauncherEnvironment() if DeepSpeedLauncherEnvironment.detect() else super().choose_environment()

    def setup_environment(self) -> None:
        """Join the process group, then hand it to DeepSpeed's comm layer (which reads this process's ranks
        from the environment variables a launcher sets)."""
        import deepspeed

        _quiet_deepspeed(self.logging_level)
        os.environ.update({"RANK": str(self.global_rank), "LOCAL_RANK": str(self.local_rank),
                           "WORLD_SIZE": str(self.world_size)})
        super().setup_environment()
        deepspeed.init_distributed(dist_backend=self.accelerator.process_group_backend, dist_init_required=False)

    # -- model and optimizers -----------------------------------------------------------------
    def model_init_context(self) -> contextlib.AbstractContextManager:
        """Around configure_model: under ZeRO stage 3, layers are created already partitioned over processes."""
        if self.zero_stage != 3:
            return contextlib.nullcontext()
        import deepspeed

        config = self._engine_config(with_optimizer=False)
        return deepspeed.zero.Init(config_dict_or_path=config)

    def setup(self, module: torch.nn.Module, build_optimizers: Callable[[], OptimizerSetup] | None, *,
              settings: TrainingSettings = TrainingSettings()) -> OptimizerSetup | None:
        """Build the engine over the module and the user's optimizer (or the config's own optimizer).

        The user's learning-rate schedulers stay with the Trainer, which steps them by their interval;
        a scheduler from the config's "scheduler" section is stepped by the engine at each optimizer step.
        """
        if build_optimizers is None and self.engine is not None and self.module is module:
            return None  # evaluating after fit: the trained engine is reused
        self.training_settings = settings
        self.module = module
        setup = build_optimizers() if build_optimizers is not None else None
        optimizer = _single_optimizer(setup) if setup is not None else None
        training = setup is not None
        if training and optimizer is None and "optimizer" not in self.config:
            raise ConfigurationError(
                "DeepSpeed found no optimizer: return one from configure_optimizers, or add an 'optimizer' section "
                "to the DeepSpeed config"
            )
        if optimizer is not None and "optimizer" in self.config:
            raise ConfigurationError(
                "both configure_optimizers and the DeepSpeed config's 'optimizer' section give an optimizer: keep one"
            )
        config = self._engine_config(with_optimizer=training)
        if optimizer is not None:
            _check_offloaded_optimizer(optimizer, config)
        self._clip_value = config.get("gradient_clipping")
        self.engine = _initialize(StepRunner(module), optimizer, config, training)
        self.model = self.engine
        if not training:
            return None
        basic = (optimizer if optimizer is not None
                 else getattr(self.engine.optimizer, "optimizer", self.engine.optimizer))
        return OptimizerSetup([basic], setup.schedulers)

    def _engine_config(self, with_optimizer: bool) -> dict[str, Any]:
        return ds_config.complete_config(
            self.config, self.training_settings, precision=self._precision_name, world_size=self.world_size,
            with_optimizer=with_optimizer, micro_batch_size=None,
        )

    @property
    def _precision_name(self) -> str:
        return self.precision.name or "32-true"

    def run_step(self, method: str, *args: Any) -> Any:
        """Every step goes through engine.forward (ZeRO's hooks); DeepSpeed, not the precision plugin, casts."""
        return self.engine(method, *args)

    def backward(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer | None) -> None:
        """The Trainer already divided the loss by accumulate_grad_batches, so the engine must not again."""
        self.engine.backward(loss, scale_wrt_gas=False)

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Callable[[], Any] | None = None) -> Any:
        """engine.step(): unscale, clip (config's gradient_clipping), step, zero the gradients, step its scheduler."""
        result = closure() if closure is not None else None
        self.engine.step()
        return result

    def zero_grad(self, optimizer: torch.optim.Optimizer) -> None:
        """Nothing: engine.step() zeroes the gradients it owns."""

    def clip_gradients(self, optimizer: torch.optim.Optimizer, value: float, algorithm: str = "norm") -> None:
        """Clipping happens inside engine.step() with the config's value; a different request is refused."""
        if algorithm != "norm" or self._clip_value is None or float(value) != float(self._clip_value):
            raise ConfigurationError(
                f"DeepSpeed clips inside its optimizer step with the norm {self._clip_value} fixed at setup; "
                f"clipping to {algorithm} {value} now is not possible: set Trainer(gradient_clip_val=...) before fit"
            )

    def no_backward_sync(self, enabled: bool) -> contextlib.AbstractContextManager:
        """Tell the engine whether this backward ends an accumulation window (the Trainer's loop decides)."""
        self.engine.set_gradient_accumulation_boundary(not enabled)
        return contextlib.nullcontext()

    # -- data -------------------------------------------------------------------------------
    def batch_to_device(self, batch: Any, device: torch.device | None = None) -> Any:
        batch = self.accelerator.batch_to_device(batch, device or self.root_device)
        dtype = _HALF_DTYPES.get(ds_config.PRECISION_SECTIONS[self._precision_name] or "")
        if dtype is None:
            return batch
        return apply_to_tensors(batch, lambda tensor: tensor.to(dtype) if tensor.is_floating_point() else tensor)

    def process_dataloader(self, dataloader: Iterable, training: bool = False) -> Iterable:
        """The training dataloader's batch size becomes DeepSpeed's micro batch size (for its sample counts)."""
        batch_size = getattr(dataloader, "batch_size", None) or getattr(
            getattr(dataloader, "batch_sampler", None), "batch_size", None)
        if training and self._micro_batch_from_loader and self.engine is not None and batch_size:
            self.engine.set_train_micro_batch_size(batch_size)
        return super().process_dataloader(dataloader, training)

    # -- checkpoints --------------------------------------------------------------------------
    def module_state_dict(self) -> dict[str, Any]:
        """The full weights; under ZeRO stage 3 they are gathered from every process (all must call this)."""
        if self.zero_stage != 3:
            return self.module.state_dict()
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(self.module.parameters()), modifier_rank=None):
            return {name: tensor.detach().clone() for name, tensor in self.module.state_dict().items()}

    def checkpoint_weights(self, weights_only: bool = False) -> dict[str, Any]:
        """A weights-only checkpoint gets the full weights (gathered under ZeRO-3); a training checkpoint gets a
        placeholder, because the engine writes every rank's weight shards itself."""
        if weights_only:
            return self.module_state_dict()
        return ds_checkpoint.WeightsInEngineCheckpoint()

    def load_module_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        if isinstance(state, ds_checkpoint.WeightsInEngineCheckpoint):
            return
        if self.zero_stage == 3:
            raise CheckpointError(
                "loading a single-file checkpoint into a ZeRO stage 3 model is not supported: evaluate with "
                "stage 1 or 2, or pass the DeepSpeed checkpoint directory"
            )
        self.module.load_state_dict(state, strict=strict)

    def optimizer_state_dict(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """Nothing: the engine writes every rank's optimizer shards itself (ZeRO's partitioned optimizer,
        offloaded ones included, cannot give a torch state dict)."""
        return {}

    def save_checkpoint(self, checkpoint: dict[str, Any], path: PathLike) -> None:
        """Every rank writes its shards into a directory at `path`, which replaces any earlier one whole.

        A weights-only checkpoint (real weights, no optimizer states) is one file that global rank zero writes
        through the checkpoint IO, loadable without DeepSpeed.
        """
        if not isinstance(checkpoint["state_dict"], ds_checkpoint.WeightsInEngineCheckpoint):
            super().save_checkpoint(checkpoint, path)
            return
        if self.engine is None:
            raise CheckpointError("DeepSpeed saves checkpoints through its engine: save during or after fit")
        path = os.fspath(path)
        partial = f"{path}.partial"
        if self.is_global_zero and os.path.isdir(partial):
            shutil.rmtree(partial)
        self.barrier()
        self.engine.save_checkpoint(partial, tag=ds_checkpoint.TAG, client_state=ds_checkpoint.client_state(checkpoint))
        self.barrier()
        if self.is_global_zero:
            _replace_directory(partial, path)
        self.barrier()

    def load_checkpoint(self, path: PathLike, weights_only: bool = True) -> dict[str, Any]:
        """Load a DeepSpeed checkpoint directory into the engine; its Trainer state is returned for the rest."""
        if not ds_checkpoint.is_deepspeed_checkpoint(path):
            training = self.engine is not None and self.engine.optimizer is not None
            if training or not os.path.isfile(path):
                raise CheckpointError(
                    f"{os.fspath(path)!r} is not a DeepSpeed checkpoint directory: resume a DeepSpeed run from the "
                    "directory it saved (plain weights can be loaded into the module before fit)"
                )
            return self.checkpoint_io.load_checkpoint(path, weights_only=weights_only)
        training = self.engine.optimizer is not None
        load_path, loaded = self.engine.load_checkpoint(
            os.fspath(path), load_optimizer_states=training, load_lr_scheduler_states=training,
            load_module_only=not training,
        )
        if load_path is None:
            raise CheckpointError(f"DeepSpeed found no checkpoint to load in {os.fspath(path)!r}")
        state = ds_checkpoint.trainer_state(loaded, path)
        state["state_dict"] = ds_checkpoint.WeightsInEngineCheckpoint()
        return state

    def remove_checkpoint(self, path: PathLike) -> None:
        if not os.path.isdir(path):
            super().remove_checkpoint(path)  # a weights-only file
        elif self.is_global_zero:
            shutil.rmtree(path)


def _initialize(runner: StepRunner, optimizer: torch.optim.Optimizer | None, config: dict[str, Any],
                training: bool) -> Any:
    import deepspeed

    parameters = [p for p in runner.parameters() if p.requires_grad] if training and optimizer is None else None
    engine, *_ = deepspeed.initialize(
        model=runner, optimizer=optimizer, model_parameters=parameters, config=config, dist_init_required=False
    )
    return engine


def _check_offloaded_optimizer(optimizer: torch.optim.Optimizer, config: dict[str, Any]) -> None:
    """ZeRO-Offload steps on the CPU with DeepSpeed's own CPU optimizers; a torch one only where the config allows."""
    from deepspeed.ops.adam import DeepSpeedCPUAdam
    from deepspeed.ops.lion import DeepSpeedCPULion

    offload = config.get("zero_optimization", {}).get("offload_optimizer") or {}
    if (offload.get("device", "none") == "none" or isinstance(optimizer, (DeepSpeedCPUAdam, DeepSpeedCPULion))
            or not config.get("zero_force_ds_cpu_optimizer", True)):
        return
    name = f"{type(optimizer).__module__}.{type(optimizer).__qualname__}"
    raise ConfigurationError(
        f"optimizer offload steps the optimizer on the CPU with DeepSpeed's CPU optimizer, but configure_optimizers "
        f"returned {name}: return deepspeed.ops.adam.DeepSpeedCPUAdam (a C++ op compiled on first use, which needs "
        "a C++ compiler), or add an 'optimizer' section to the DeepSpeed config, or set "
        f"\"zero_force_ds_cpu_optimizer\": false in the config to step the {name} on the CPU (slower)"
    )


def _single_optimizer(setup: OptimizerSetup) -> torch.optim.Optimizer | None:
    if len(setup.optimizers) > 1:
        raise ConfigurationError(
            f"DeepSpeed trains with one optimizer, but configure_optimizers returned {len(setup.optimizers)}: "
            "return one (use parameter groups for different settings)"
        )
    return setup.optimizers[0] if setup.optimizers else None


def _replace_directory(source: str, target: str) -> None:
    """Move `source` to `target`; an earlier `target` is kept aside until the new one is in place."""
    aside = f"{target}.old"
    if os.path.isdir(aside):
        shutil.rmtree(aside)
    if os.path.exists(target):
        os.replace(target, aside)
    os.replace(source, target)
    if os.path.isdir(aside):
        shutil.rmtree(aside)


def _quiet_deepspeed(level: int) -> None:
    logging.getLogger("DeepSpeed").setLevel(level)
