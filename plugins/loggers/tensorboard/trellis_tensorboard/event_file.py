"""One TensorBoard event file per run, appended in whole records, and cut back to a record count on resume.

The framing is TFRecord's, which every TensorBoard reader expects: a little-endian u64 length, its masked
CRC-32C, the serialized Event, and the data's masked CRC-32C.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Iterator

try:
    from google_crc32c import value as _crc32c
except ImportError:  # tensorboard's pure-Python CRC: correct, about a hundred times slower
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import crc32c as _crc32c

_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8


def masked_crc(data: bytes) -> int:
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One record around serialized bytes."""
    length = _LENGTH.pack(len(data))
    return length + _CRC.pack(masked_crc(length)) + data + _CRC.pack(masked_crc(data))


def new_file_name() -> str:
    """A name TensorBoard recognises as an event file, unique to this process and moment."""
    return f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.trellis"


def records(path: str) -> Iterator[bytes]:
    """The serialized events of whole records, oldest first (a torn last record is left out)."""
    with open(path, "rb") as file:
        data = file.read()
    for start, end in _record_spans(data):
        yield data[start + _LENGTH.size + _CRC.size:end - _CRC.size]


def keep_records(path: str, count: int) -> int:
    """Cut the file after its first `count` whole records, in place; how many whole records it kept."""
    with open(path, "rb+") as file:
        data = file.read()
        offset = kept = 0
        for _, end in _record_spans(data):
            if kept == count:
                break
            offset, kept = end, kept + 1
        file.truncate(offset)
    return kept


class EventFile:
    """Appends framed records to one file; a failed append leaves the file as it was."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.size = os.path.getsize(path) if os.path.exists(path) else 0

    def append(self, data: bytes) -> None:
        with open(self.path, "r+b" if os.path.exists(self.path) else "wb") as file:
            file.truncate(self.size)  # an earlier append that failed half-way leaves no partial record
            file.seek(self.size)
            try:
                file.write(data)
                file.flush()
            except OSError:
                file.truncate(self.size)
                raise
        self.size += len(data)


def _record_spans(data: bytes) -> Iterator[tuple[int, int]]:
    offset = 0
    header = _LENGTH.size + _CRC.size
    while offset + header <= len(data):
        (length,) = _LENGTH.unpack_from(data, offset)
        end = offset + header + length + _CRC.size
        if end > len(data):
            return
        yield offset, end
        offset = end
