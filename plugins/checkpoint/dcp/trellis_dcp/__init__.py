"""Sharded checkpoints through torch.distributed.checkpoint: every process writes its own part."""

from trellis_dcp.checkpoint_io import DCPCheckpointIO

__all__ = ["DCPCheckpointIO"]
