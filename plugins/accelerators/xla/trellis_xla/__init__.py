"""TPUs and other XLA devices through torch_xla; torch_xla is imported only once the plugin is used."""

from trellis_xla.accelerator import XLAAccelerator
from trellis_xla.strategy import XLAStrategy, xla_fsdp

TRELLIS_PLUGIN_API = 1

__all__ = ["XLAAccelerator", "XLAStrategy", "xla_fsdp"]
