"""strategy="fsdp": torch's fully_shard (FSDP2) over the ranks the kernel's launchers and cluster environments give."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch

from trellis.errors import ConfigurationError
from trellis.plugin import ParallelStrategy, StepRunner, TrainingSettings

if TYPE_CHECKING:
    from trellis.plugin import OptimizerSetup, PathLike


class FSDPStrategy(ParallelStrategy):
    """Shards each module of the `shard_modules` types, then the whole model, before optimizers are built.

    Every step method runs through the sharded root, so parameters are gathered for it and freed after.
    Checkpoints hold full (unsharded) state dicts, gathered from every rank and written by rank 0; with
    a sharded checkpoint IO (`plugins=[DCPCheckpointIO()]`) each rank writes and reads its own shards.
    """

    name = "fsdp"

    def __init__(
        self,
        *,
        shard_modules: Iterable[type[torch.nn.Module]] = (),
        activation_checkpointing: Iterable[type[torch.nn.Module]] = (),
        cpu_offload: bool = False,
        reshard_after_forward: bool = True,
        **options: Any,
    ) -> None:
        """`options`: what every process-group strategy takes (`timeout`, `cluster_environment`)."""
        super().__init__(**options)
        self.shard_modules = tuple(shard_modules)
        self.activation_checkpointing = tuple(activation_checkpointing)
        self.cpu_offload = cpu_offload
        self.reshard_after_forward = reshard_after_forward
        #: the optimizers built over the sharded parameters (templates for loading sharded checkpoints).
        self.optimizers: list[torch.optim.Optimizer] = []

    def setup(self, module: torch.nn.Module, build_optimizers: Callable[[], OptimizerSetup] | None, *,
              settings: TrainingSettings = TrainingSettings()) -> OptimizerSetup | None:
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

        self.training_settings = settings
        if isinstance(self.model, StepRunner) and self.model.module is module:  # sharded by an earlier stage
            return self._build_optimizers(build_optimizers)
        meta_names, meta_modules = _created_on_meta(module)
        module = self.precision.convert_module(module if meta_names else module.to(self.root_device))
        if self.activation_checkpointing:
            from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing

            kinds = self.activation_checkpointing
            apply_activation_checkpointing(module, check_fn=lambda candidate: isinstance(candidate, kinds))
        compute_dtype = self.precision.compute_dtype
        shard_options = {
            "reshard_after_forward": self.reshard_after_forward,
            "mp_policy": MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
            if compute_dtype is not None else MixedPrecisionPolicy(),
            "offload_policy": CPUOffloadPolicy() if self.cpu_offload else OffloadPolicy(),
        }
        if self.shard_modules:
            for submodule in list(module.modules()):
                if submodule is not module and isinstance(submodule, self.shard_modules):
                    fully_shard(submodule, **shard_options)
        self.module = module
        self.model = fully_shard(StepRunner(module), **shard_options)
        if meta_names:
            _materialize(module, meta_names, meta_modules, self.root_device)
        return self._build_optimizers(build_optimizers)

    def model_init_context(self) -> contextlib.AbstractContextManager:
        """Layers created in configure_model start on the meta device: no rank ever holds them whole; after
        sharding, each rank initialises only its shards with the layers' reset_parameters()."""
        return torch.device("meta")

    def _build_optimizers(self, build_optimizers: Callable[[], OptimizerSetup] | None) -> OptimizerSetup | None:
        if build_optimizers is None:
            return None
        setup = build_optimizers()
        self.optimizers = list(setup.optimizers)
        return setup

    def run_step(self, method: str, *args: Any) -> Any:
        with self.precision.forward_context(self.accelerator.device_type):
            return self.model(method, *args)

    def no_backward_sync(self, enabled: bool) -> contextlib.AbstractContextManager:
        return _gradient_sync(self.model, not enabled)

    # -- checkpoints: full state dicts gathered to rank 0, or sharded ones for a sharded checkpoint IO -----
    @property
    def sharded_checkpoints(self) -> bool:
        """Whether the checkpoint IO writes each rank's shards (DCP), so state dicts stay sharded."""
        return bool(self.checkpoint_io is not None and self.checkpoint_io.sharded)

    def _options(self, full: bool, strict: bool = True) -> Any:
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=full, cpu_offload=full, strict=strict)

    def module_state_dict(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(self.module, options=self._options(full=not self.sharded_checkpoints))

    def load_module_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        options = StateDictOptions(full_state_dict=not _holds_dtensors(state), strict=strict)
        set_model_state_dict(self.module, state, options=options)

    def optimizer_state_dict(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        options = self._options(full=not self.sharded_checkpoints)
        return get_optimizer_state_dict(self.module, optimizer, options=options)

    def load_optimizer_state_dict(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        options = StateDictOptions(full_state_dict=not _holds_dtensors(state.get("state", {})))
        set_optimizer_state_dict(self.module, optimizer, state, options=options)

    def load_checkpoint(self, path: PathLike, weights_only: bool = True) -> dict[str, Any]:
        """A sharded checkpoint IO reads only this rank's shards, resharding one saved at another world size.

        Optimizer states that do not exist yet (a fresh run resuming) load whole and are split by
        `load_optimizer_state_dict`: creating them here would step the optimizer once.
        """
        if not self.sharded_checkpoints:
            return super().load_checkpoint(path, weights_only=weights_only)
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        sharded = self._options(full=False)
        template: dict[str, Any] = {"state_dict": get_model_state_dict(self.module, options=sharded)}
        if self.optimizers and all(optimizer.state for optimizer in self.optimizers):
            template["optimizer_states"] = [get_optimizer_state_dict(self.module, optimizer, options=sharded)
                                            for optimizer in self.optimizers]
        return self.checkpoint_io.load_checkpoint(path, weights_only=weights_only, template=template)

    def teardown(self) -> None:
        """The module stays sharded (its parameters are DTensors) until the process ends."""
        super().teardown()


@contextlib.contextmanager
def _gradient_sync(model: torch.nn.Module, enabled: bool) -> Any:
    """Skip reduce-scatter while accumulating; gradients stay unsharded on each rank until the last micro-batch."""
    if enabled:
        yield
        return
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def _holds_dtensors(state: dict[str, Any]) -> bool:
    """Whether a state dict is sharded (DTensor values) rather than full."""
    from torch.distributed.tensor import DTensor

    def sharded(value: Any) -> bool:
        if isinstance(value, dict):
            return any(sharded(item) for item in value.values())
        return isinstance(value, DTensor)

    return any(sharded(value) for value in state.values())


def _created_on_meta(module: torch.nn.Module) -> tuple[set[str], list[torch.nn.Module]]:
    """Names of the meta tensors (made in configure_model) and the modules that own them directly."""
    names = {name for name, tensor in _named_tensors(module) if tensor.is_meta}
    owners = [child for child in module.modules()
              if any(tensor.is_meta for tensor in (*child.parameters(recurse=False), *child.buffers(recurse=False)))]
    for owner in owners:
        if not callable(getattr(owner, "reset_parameters", None)):
            raise ConfigurationError(
                f"{type(owner).__name__} was created in configure_model, where strategy='fsdp' builds layers on the "
                "meta device and initialises each rank's shards with reset_parameters(); it has none: define "
                f"{type(owner).__name__}.reset_parameters(), or create the layer in __init__"
            )
    return names, owners


def _materialize(module: torch.nn.Module, meta_names: set[str], owners: list[torch.nn.Module],
                 device: torch.device) -> None:
    """Give the sharded meta tensors storage: keep every other tensor's values, initialise the new shards."""
    kept = {name: tensor.detach().clone() for name, tensor in _named_tensors(module) if name not in meta_names}
    module.to_empty(device=device)
    with torch.no_grad():
        for name, tensor in _named_tensors(module):
            if name in kept:
                tensor.copy_(kept[name])
        for owner in owners:
            owner.reset_parameters()


def _named_tensors(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [*module.named_parameters(), *module.named_buffers()]
