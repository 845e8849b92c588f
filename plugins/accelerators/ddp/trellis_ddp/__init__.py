"""Data-parallel training over torch.distributed for any accelerator that names its process-group backend."""
