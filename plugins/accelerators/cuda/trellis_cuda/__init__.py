"""NVIDIA GPUs through torch.cuda: device selection, pinned non-blocking transfers, memory stats."""

from trellis_cuda.accelerator import CUDAAccelerator

__all__ = ["CUDAAccelerator"]
