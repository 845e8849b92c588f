"""Mixed precision modes: float32 parameters, a lower-precision forward under autocast."""

from trellis_mixed.autocast import AutocastPrecision, BFloat16Mixed
from trellis_mixed.fp8 import TransformerEnginePrecision
from trellis_mixed.scaled import Float16Mixed

TRELLIS_PLUGIN_API = 1

__all__ = ["AutocastPrecision", "BFloat16Mixed", "Float16Mixed", "TransformerEnginePrecision"]
