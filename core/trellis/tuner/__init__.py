"""trellis.tuner: find a learning rate and the largest batch size that fits, with short real fits."""

from trellis.tuner.batch_size_scaling import MemoryCapExceeded
from trellis.tuner.lr_finder import LRFinderResult
from trellis.tuner.tuning import Tuner

__all__ = ["LRFinderResult", "MemoryCapExceeded", "Tuner"]
