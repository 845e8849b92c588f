"""fp8 through NVIDIA Transformer Engine: Linear and LayerNorm layers compute in float8 on Hopper GPUs."""

from __future__ import annotations

import contextlib
import importlib.util
from typing import Any

import torch

from trellis.errors import ConfigurationError
from trellis.plugin import Precision, apply_to_tensors

#: fp8 tensor cores arrived with compute capability 8.9 (Ada) and 9.0 (Hopper).
FP8_MIN_CAPABILITY = (8, 9)


def unavailable_reason() -> str | None:
    """Why fp8 cannot run in this process, or None when it can."""
    missing = []
    if not torch.cuda.is_available():
        missing.append("no CUDA GPU is visible")
    elif torch.cuda.get_device_capability() < FP8_MIN_CAPABILITY:
        name, (major, minor) = torch.cuda.get_device_name(), torch.cuda.get_device_capability()
        missing.append(f"the GPU {name} has compute capability {major}.{minor}, and fp8 needs 8.9 or newer (Hopper)")
    if importlib.util.find_spec("transformer_engine") is None:
        missing.append("the transformer_engine library is not installed (pip install 'trellis-mixed[fp8]')")
    return "; ".join(missing) or None


class TransformerEnginePrecision(Precision):
    """"transformer-engine" / "fp8": Transformer Engine layers in float8, the rest under bf16 autocast.

    `torch.nn.Linear` and `torch.nn.LayerNorm` children are replaced by their Transformer Engine
    equivalents (Linear layers whose sizes fp8 cannot tile stay as they are); weights are kept in
    `weights_dtype`. Available only on fp8-capable NVIDIA GPUs with transformer_engine installed.
    """

    name = "transformer-engine"
    param_dtype = torch.bfloat16
    compute_dtype = torch.bfloat16

    def __init__(
        self,
        weights_dtype: torch.dtype = torch.bfloat16,
        recipe: Any = None,
        replace_layers: bool = True,
    ) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise ConfigurationError(
                f"precision='transformer-engine' (fp8) is unavailable here: {reason}. It needs an NVIDIA GPU with "
                "fp8 support (Hopper, H100/H200) and transformer_engine; elsewhere use precision='bf16-mixed'"
            )
        self.param_dtype = weights_dtype
        self.recipe = recipe if recipe is not None else _default_recipe()
        self.replace_layers = replace_layers

    def convert_module(self, module: torch.nn.Module) -> torch.nn.Module:
        if self.replace_layers:
            _replace_layers(module)
        return module.to(dtype=self.param_dtype)

    def convert_input(self, batch: Any) -> Any:
        dtype = self.param_dtype
        return apply_to_tensors(batch, lambda tensor: tensor.to(dtype) if tensor.is_floating_point() else tensor)

    def forward_context(self, device_type: str) -> contextlib.AbstractContextManager:
        import transformer_engine.pytorch as te

        if device_type != "cuda":
            raise ConfigurationError(
                f"precision='transformer-engine' runs on CUDA GPUs, not on {device_type!r}: pass accelerator='cuda'"
            )
        stack = contextlib.ExitStack()
        stack.enter_context(torch.autocast("cuda", dtype=self.compute_dtype))
        stack.enter_context(te.fp8_autocast(enabled=True, fp8_recipe=self.recipe))
        return stack


def _default_recipe() -> Any:
    from transformer_engine.common.recipe import DelayedScaling, Format

    return DelayedScaling(fp8_format=Format.HYBRID, amax_history_len=16, amax_compute_algo="max")


def _replace_layers(module: torch.nn.Module) -> None:
    """Swap Linear and LayerNorm children for Transformer Engine layers holding the same weights."""
    import transformer_engine.pytorch as te

    for name, child in module.named_children():
        if isinstance(child, torch.nn.Linear):
            if child.in_features % 16 or child.out_features % 16:  # fp8 GEMMs tile in multiples of 16
                continue
            replacement = te.Linear(child.in_features, child.out_features, bias=child.bias is not None,
                                    params_dtype=child.weight.dtype, device=child.weight.device)
        elif isinstance(child, torch.nn.LayerNorm) and len(child.normalized_shape) == 1 and child.elementwise_affine:
            replacement = te.LayerNorm(child.normalized_shape[0], eps=child.eps,
                                       params_dtype=child.weight.dtype, device=child.weight.device)
        else:
            _replace_layers(child)
            continue
        with torch.no_grad():
            replacement.weight.copy_(child.weight)
            if child.bias is not None:
                replacement.bias.copy_(child.bias)
        setattr(module, name, replacement)
