"""`seed_everything` where Lightning users import it from (lightning.pytorch.utilities.seed)."""

from __future__ import annotations

from trellis.utils.seed import seed_everything

__all__ = ["seed_everything"]
