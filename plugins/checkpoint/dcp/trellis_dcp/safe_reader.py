"""A DCP file reader whose metadata unpickling runs no code: only DCP's own metadata types are allowed.

DCP stores its `.metadata` file with pickle, which would run whatever a crafted file names; the tensor
data itself is read with `torch.load(weights_only=True)` by DCP already.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

from trellis.errors import CheckpointError

_METADATA_TYPES = {
    "torch.distributed.checkpoint.metadata": {
        "Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "TensorProperties", "_MEM_FORMAT_ENCODING",
        "ChunkStorageMetadata", "MetadataIndex", "StorageMeta",
    },
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.serialization": {"_get_layout"},
    "pathlib": {"Path", "PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath"},
    "collections": {"OrderedDict"},
}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        allowed = name in _METADATA_TYPES.get(module, ())
        if module == "torch":
            allowed = name == "Size" or isinstance(getattr(torch, name, None), torch.dtype)
        if not allowed and not all(part.isidentifier() for part in (*module.split("."), name)):
            raise CheckpointError(
                f"the checkpoint's DCP metadata is damaged (it names {module!r}.{name!r}, no Python name): resume "
                "from another checkpoint, or start without ckpt_path"
            )
        if not allowed:
            raise CheckpointError(
                f"the checkpoint's DCP metadata refers to {module}.{name}, which weights-only loading refuses since "
                "it could run code. If you trust the checkpoint, load it with weights_only=False"
            )
        return super().find_class(module, name)


class SafeFileSystemReader(FileSystemReader):
    """FileSystemReader that unpickles `.metadata` with an allowlist unless `weights_only` is False."""

    def __init__(self, path: str | os.PathLike, weights_only: bool = True) -> None:
        super().__init__(path)
        self.weights_only = weights_only

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        if not self.weights_only:
            return super().read_metadata(*args, **kwargs)
        path = self.fs.concat_path(self.path, ".metadata")
        with self.fs.create_stream(path, "rb") as stream:
            metadata = _MetadataUnpickler(stream).load()
        if not isinstance(metadata, Metadata):
            raise CheckpointError(f"{os.fspath(path)!r} is not DCP metadata: the checkpoint is damaged")
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata
