"""Sharded checkpoints through torch.distributed.checkpoint: every process writes its own part."""

from trellis_dcp.checkpoint_io import DCPCheckpointIO

TRELLIS_PLUGIN_API = 1

__all__ = ["DCPCheckpointIO"]
