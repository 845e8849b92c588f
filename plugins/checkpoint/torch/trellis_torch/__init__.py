"""Single-file checkpoints: written atomically (locally or to fsspec URLs), loaded with weights_only=True."""

from trellis_torch.checkpoint_io import SAFE_TYPES, TorchCheckpointIO, async_torch_checkpoint_io

TRELLIS_PLUGIN_API = 1

__all__ = ["SAFE_TYPES", "TorchCheckpointIO", "async_torch_checkpoint_io"]

