"""NVIDIA GPUs through torch.cuda: device selection, pinned non-blocking transfers, memory stats."""

from trellis_cuda.accelerator import CUDAAccelerator

TRELLIS_PLUGIN_API = 1

__all__ = ["CUDAAccelerator"]
