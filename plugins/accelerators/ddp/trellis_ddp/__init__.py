"""Data-parallel training over torch.distributed for any accelerator that names its process-group backend."""

TRELLIS_PLUGIN_API = 1
