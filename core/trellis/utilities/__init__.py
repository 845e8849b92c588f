"""What Lightning users import from `lightning.pytorch.utilities`, under the same names.

    from trellis.utilities import rank_zero_only, rank_zero_info, seed_everything, grad_norm
"""

from __future__ import annotations

from trellis.utilities.exceptions import MisconfigurationException
from trellis.utilities.flops import measure_flops
from trellis.utilities.grads import grad_norm
from trellis.utilities.rank_zero import (
    rank_zero_debug,
    rank_zero_deprecation,
    rank_zero_info,
    rank_zero_only,
    rank_zero_warn,
)
from trellis.utilities.seed import seed_everything
from trellis.utils.collections import move_to_device
from trellis.utils.hparams import AttributeDict

__all__ = [
    "AttributeDict",
    "MisconfigurationException",
    "grad_norm",
    "measure_flops",
    "move_data_to_device",
    "rank_zero_debug",
    "rank_zero_deprecation",
    "rank_zero_info",
    "rank_zero_only",
    "rank_zero_warn",
    "seed_everything",
]

#: Lightning's name for moving every tensor of a nested batch to a device.
move_data_to_device = move_to_device
