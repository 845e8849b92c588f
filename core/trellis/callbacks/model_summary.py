"""ModelSummary: the table of the module's layers Lightning prints when fit starts (name, type, parameters, mode,
FLOPs, and input/output sizes when the module has an `example_input_array`)."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch

from trellis.callbacks.base import Callback
from trellis.callbacks.messages import info

UNKNOWN_SIZE = "?"
LEFTOVER_PARAMS_NAME = "other params"
NOT_APPLICABLE = "n/a"
#: bits per parameter of each precision name (the size estimate counts 32 for others, such as mixed modes).
_PRECISION_BITS = {"64": 64, "32": 32, "16": 16, "bf16": 16, "16-true": 16, "bf16-true": 16, "32-true": 32,
                   "64-true": 64}


class ModelSummary(Callback):
    """Prints the summary of the module's layers down to `max_depth` (-1: all, 0: none) when fit starts, on
    global rank zero."""

    def __init__(self, max_depth: int = 1, **summarize_kwargs: Any) -> None:
        self._max_depth = max_depth
        self._summarize_kwargs = summarize_kwargs

    @property
    def max_depth(self) -> int:
        return self._max_depth

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if not self._max_depth:
            return
        summary = summarize(pl_module, max_depth=self._max_depth)
        if trainer.is_global_zero:
            self.summarize(summary.columns(), summary.total_parameters, summary.trainable_parameters,
                           summary.model_size, summary.total_training_modes, total_flops=summary.total_flops,
                           **self._summarize_kwargs)

    @staticmethod
    def summarize(summary_data: list[tuple[str, list[str]]], total_parameters: int, trainable_parameters: int,
                  model_size: float, total_training_modes: dict[str, int], total_flops: int,
                  **summarize_kwargs: Any) -> None:
        """Show the table (override to show it another way; RichModelSummary draws it with rich)."""
        info("\n" + format_summary_table(total_parameters, trainable_parameters, model_size, total_training_modes,
                                         total_flops, *summary_data))


class ModuleSummary:
    """The layers of a module down to `max_depth`, their parameters, modes and (with an `example_input_array`,
    run once through the module in eval mode) FLOPs and input/output sizes."""

    def __init__(self, module: torch.nn.Module, max_depth: int = 1) -> None:
        if not isinstance(max_depth, int) or max_depth < -1:
            raise ValueError(f"`max_depth` can be -1, 0 or > 0, got {max_depth}.")
        self._module, self._max_depth = module, max_depth
        self._flop_counts: dict[str, dict[Any, int]] = {}
        self.total_flops = 0
        layers = self._named_layers()
        self._sizes: dict[str, tuple[Any, Any]] = {}
        if getattr(module, "example_input_array", None) is not None:
            self._run_example_input(layers)
        if max_depth >= 1:
            layers = [(name, layer) for name, layer in layers if name.count(".") < max_depth]
        self._layers = layers
        trainer = getattr(module, "_trainer", None)
        precision = getattr(getattr(trainer, "precision_plugin", None), "name", "32-true") if trainer else "32-true"
        self._bytes_per_parameter = _PRECISION_BITS.get(precision, 32) / 8

    def _named_layers(self) -> list[tuple[str, torch.nn.Module]]:
        if self._max_depth == 0:
            return []
        if self._max_depth == 1:
            return list(self._module.named_children())
        return list(self._module.named_modules())[1:]

    def _run_example_input(self, layers: list[tuple[str, torch.nn.Module]]) -> None:
        from torch.utils.flop_counter import FlopCounterMode

        def recorder(name: str) -> Any:
            def record(_: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
                inputs = (*args, *kwargs.values()) if kwargs else args
                if name not in self._sizes:
                    self._sizes[name] = (_shape(inputs[0] if len(inputs) == 1 else inputs), _shape(output))
            return record

        handles = [layer.register_forward_hook(recorder(name), with_kwargs=True) for name, layer in layers
                   if not isinstance(layer, torch.jit.ScriptModule)]
        module = self._module
        example = module.example_input_array
        trainer = getattr(module, "_trainer", None)
        if trainer is not None:
            example = trainer.strategy.batch_to_device(example)
        modes = {submodule: submodule.training for submodule in module.modules()}
        counter = FlopCounterMode(display=False, depth=self._max_depth + 1)
        context = (trainer.precision_plugin.forward_context(trainer.strategy.root_device.type)
                   if trainer is not None else contextlib.nullcontext())
        try:
            torch.nn.Module.train(module, False)
            with torch.no_grad(), context, counter:
                if isinstance(example, (list, tuple)):
                    module(*example)
                elif isinstance(example, dict):
                    module(**example)
                else:
                    module(example)
        finally:
            for handle in handles:
                handle.remove()
            for submodule, mode in modes.items():
                submodule.training = mode
        self.total_flops = counter.get_total_flops()
        self._flop_counts = counter.get_flop_counts()

    @property
    def layer_names(self) -> list[str]:
        return [name for name, _ in self._layers]

    @property
    def layer_types(self) -> list[str]:
        return [type(layer).__name__ for _, layer in self._layers]

    @property
    def param_nums(self) -> list[int]:
        return [_count(layer.parameters()) for _, layer in self._layers]

    @property
    def training_modes(self) -> list[bool]:
        return [layer.training for _, layer in self._layers]

    @property
    def in_sizes(self) -> list[Any]:
        return [self._sizes.get(name, (UNKNOWN_SIZE, UNKNOWN_SIZE))[0] for name in self.layer_names]

    @property
    def out_sizes(self) -> list[Any]:
        return [self._sizes.get(name, (UNKNOWN_SIZE, UNKNOWN_SIZE))[1] for name in self.layer_names]

    @property
    def total_training_modes(self) -> dict[str, int]:
        """Submodules (the module itself excluded) in train and in eval mode."""
        modes = [submodule.training for submodule in self._module.modules()][1:]
        return {"train": modes.count(True), "eval": modes.count(False)}

    @property
    def total_parameters(self) -> int:
        return _count(self._module.parameters())

    @property
    def trainable_parameters(self) -> int:
        return _count(p for p in self._module.parameters() if p.requires_grad)

    @property
    def model_size(self) -> float:
        """Megabytes the parameters take at the trainer's precision."""
        return self.total_parameters * self._bytes_per_parameter * 1e-6

    def layer_flops(self, name: str) -> int:
        return sum(self._flop_counts.get(f"{type(self._module).__name__}.{name}", {}).values())

    def columns(self) -> list[tuple[str, list[str]]]:
        """The table's columns: (header, one cell per layer)."""
        columns = [
            (" ", [str(index) for index in range(len(self._layers))]),
            ("Name", self.layer_names),
            ("Type", self.layer_types),
            ("Params", [get_human_readable_count(count) for count in self.param_nums]),
            ("Mode", ["train" if mode else "eval" for mode in self.training_modes]),
            ("FLOPs", [get_human_readable_count(self.layer_flops(name)) for name in self.layer_names]),
        ]
        if getattr(self._module, "example_input_array", None) is not None:
            columns.append(("In sizes", [str(size) for size in self.in_sizes]))
            columns.append(("Out sizes", [str(size) for size in self.out_sizes]))
        leftover = self.total_parameters - sum(self.param_nums)
        if leftover > 0:  # parameters of the module itself, outside any listed layer
            cells = {" ": " ", "Name": LEFTOVER_PARAMS_NAME, "Params": get_human_readable_count(leftover)}
            for header, values in columns:
                values.append(cells.get(header, NOT_APPLICABLE))
        return columns

    def __str__(self) -> str:
        return format_summary_table(self.total_parameters, self.trainable_parameters, self.model_size,
                                    self.total_training_modes, self.total_flops, *self.columns())

    __repr__ = __str__


def summarize(module: torch.nn.Module, max_depth: int = 1) -> ModuleSummary:
    """The summary of `module`'s layers down to `max_depth` (`str()` of it is Lightning's table)."""
    return ModuleSummary(module, max_depth=max_depth)


def format_summary_table(total_parameters: int, trainable_parameters: int, model_size: float,
                         total_training_modes: dict[str, int], total_flops: int,
                         *columns: tuple[str, list[str]]) -> str:
    """The columns side by side under their headers, then the totals."""
    rows = len(columns[0][1]) if columns else 0
    widths = [max([len(header), *(len(str(cell)) for cell in cells)]) for header, cells in columns]
    total_width = sum(widths) + 3 * (len(columns) + 1)
    lines = [" | ".join(f"{header:<{width}}" for (header, _), width in zip(columns, widths)), "-" * total_width]
    for row in range(rows):
        lines.append(" | ".join(f"{str(cells[row]):<{width}}" for (_, cells), width in zip(columns, widths)))
    lines.append("-" * total_width)
    totals = [
        (get_human_readable_count(trainable_parameters), "Trainable params"),
        (get_human_readable_count(total_parameters - trainable_parameters), "Non-trainable params"),
        (get_human_readable_count(total_parameters), "Total params"),
        (get_formatted_model_size(model_size), "Total estimated model params size (MB)"),
        (total_training_modes["train"], "Modules in train mode"),
        (total_training_modes["eval"], "Modules in eval mode"),
        (get_human_readable_count(total_flops), "Total Flops"),
    ]
    lines += [f"{value!s:<10}{label}" for value, label in totals]
    return "\n".join(lines)


def get_formatted_model_size(total_model_size: float) -> str:
    return f"{total_model_size:,.3f}"


def get_human_readable_count(number: int | float) -> str:
    """123 -> '123  ', 1234 -> '1.2 K', 2e6 -> '2.0 M', 3e9 -> '3.0 B', 4e14 -> '400 T' (never beyond T)."""
    labels = [" ", "K", "M", "B", "T"]
    digits = int(math.floor(math.log10(number)) + 1) if number > 0 else 1
    groups = min(int(math.ceil(digits / 3)), len(labels))
    scaled = number * 10 ** (-3 * (groups - 1))
    if groups == 1 or scaled >= 100:
        return f"{int(scaled):,d} {labels[groups - 1]}"
    return f"{scaled:,.1f} {labels[groups - 1]}"


def _count(parameters: Any) -> int:
    return sum(p.numel() for p in parameters if not isinstance(p, torch.nn.parameter.UninitializedParameter))


def _shape(value: Any) -> Any:
    if hasattr(value, "shape"):
        return list(value.shape)
    if isinstance(value, (list, tuple)):
        return [_shape(item) for item in value]
    return UNKNOWN_SIZE
