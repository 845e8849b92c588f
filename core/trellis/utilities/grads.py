"""Gradient norms to log (for instance from `on_before_optimizer_step`)."""

from __future__ import annotations

import torch


def grad_norm(
    module: torch.nn.Module, norm_type: float | int | str, group_separator: str = "/"
) -> dict[str, torch.Tensor]:
    """The p-norm of each parameter's gradient and of all gradients together, under Lightning's key names.

    Keys are `grad_{p}_norm{separator}{parameter name}` and `grad_{p}_norm_total` with p as a float (`2.0`,
    `inf`), so `self.log_dict(grad_norm(self, norm_type=2))` gives the same metric names as in Lightning.
    Parameters without a gradient are left out.
    """
    norm = float(norm_type)
    if not norm > 0:
        raise ValueError(f"grad_norm: norm_type={norm_type!r}; pass a positive number or 'inf'")
    norms = {
        f"grad_{norm}_norm{group_separator}{name}": parameter.grad.detach().norm(norm)
        for name, parameter in module.named_parameters()
        if parameter.grad is not None
    }
    if norms:
        norms[f"grad_{norm}_norm_total"] = torch.stack(list(norms.values())).norm(norm)
    return norms
