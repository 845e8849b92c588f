"""Why a checkpoint file did not load, told from the file itself rather than from torch's internal error text.

torch.load reports a truncated file as "[Errno 22] Invalid argument" or "failed finding central directory",
and refuses random bytes under weights_only with a message suggesting weights_only=False. A file
torch.save wrote is a zip archive whose members carry checksums, so its state can be read directly:
intact, truncated, damaged or not a torch file at all. Only an intact file can be refused as unsafe.
"""

from __future__ import annotations

import contextlib
import errno
import io
import pickle
import re
import zipfile
from typing import IO

from trellis.errors import CheckpointError

#: what weights-only unpickling says when the file names a class or function it does not allow.
_REFUSALS = (
    re.compile(r"GLOBAL ([\w.]+)"),
    re.compile(r"but got <class '([\w.]+)'>"),
    re.compile(r"unrecognized function (.+?)(?: which belongs|$)", re.MULTILINE),
)
_ZIP_MAGIC = b"PK\x03\x04"
#: pickled 0x1950a86a20f9469cfc6c (torch's legacy-format magic number), protocols 2 to 5.
_LEGACY_MAGICS = tuple(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=p)[:12] for p in (2, 3, 4, 5))
_RESUME_ELSEWHERE = (
    "It cannot be repaired: resume from another checkpoint (an earlier one in the same directory) or "
    "start without ckpt_path."
)


def load_failed(path: str, source: str | io.BytesIO, error: BaseException, weights_only: bool) -> CheckpointError:
    """The CheckpointError for a torch.load of `source` (the file at `path`) that raised `error`."""
    if isinstance(error, OSError) and error.errno in (errno.EACCES, errno.EPERM, errno.EISDIR):
        return CheckpointError(
            f"cannot read the checkpoint {path!r} ({error.strerror}): fix its permissions or pass another path"
        )
    try:
        problem = _structural_problem(source)
    except OSError as reading:
        return CheckpointError(f"cannot read the checkpoint {path!r} ({type(reading).__name__}: {reading})")
    if problem is not None:
        return CheckpointError(f"the checkpoint {path!r} {problem}. {_RESUME_ELSEWHERE}")
    unsafe = _refused_global(error) if weights_only else None
    if unsafe is not None:
        return CheckpointError(
            f"the checkpoint {path!r} holds an object of type {unsafe}, and loading it would run that type's code, "
            "so weights-only loading refused it. If you trust the file, load it with weights_only=False "
            "(Module.load_from_checkpoint(path, weights_only=False)), or allow that type with "
            "torch.serialization.add_safe_globals([...])."
        )
    detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return CheckpointError(
        f"the checkpoint {path!r} is a complete torch file, but loading it failed ({type(error).__name__}: {detail}). "
        "If that names a device, load with map_location='cpu'; otherwise the file was written by a torch version "
        "this one cannot read, or was altered after it was written."
    )


def not_a_checkpoint(path: str, loaded: object) -> CheckpointError:
    """A file that loaded but holds something other than a checkpoint dictionary (a bare tensor, a list)."""
    return CheckpointError(
        f"{path!r} holds a {type(loaded).__name__}, not a checkpoint (a dictionary written by trainer.save_checkpoint "
        "or ModelCheckpoint): load it with torch.load(path) and use the value directly, or pass a checkpoint file"
    )


def _structural_problem(source: str | io.BytesIO) -> str | None:
    """What is wrong with the file's structure, or None when it is an intact torch.save file."""
    with _open(source) as file:
        head = file.read(16)
        size = file.seek(0, io.SEEK_END)
        file.seek(0)
        if size == 0:
            return "is empty (0 bytes): its write was cut short"
        if head.startswith(_LEGACY_MAGICS):
            return None  # torch's legacy (pre-zip) format: no checksums to check
        truncated = (f"is truncated: it ends after {size} bytes, before the index a complete torch.save file "
                     "ends with (its write or copy was cut short)")
        if _ZIP_MAGIC.startswith(head):
            return truncated
        if not head.startswith(_ZIP_MAGIC):
            return ("is not a file torch.save writes (neither a zip archive nor torch's legacy format): it is "
                    "damaged or another kind of file")
        try:
            with zipfile.ZipFile(file) as archive:
                damaged = archive.testzip()
                names = archive.namelist()
        except zipfile.BadZipFile:
            return truncated
        except (OSError, EOFError, ValueError) as error:
            return f"is damaged ({type(error).__name__}: {error})"
        if damaged is not None:
            return f"is damaged: its part {damaged!r} fails its checksum"
        if not any(name.endswith("/data.pkl") for name in names):
            return "is a zip archive without the data.pkl a torch.save file holds: it is another kind of file"
    return None


def _refused_global(error: BaseException) -> str | None:
    """The class or function that weights-only unpickling refused, if that is why `error` was raised."""
    if not isinstance(error, pickle.UnpicklingError):
        return None
    for refusal in _REFUSALS:
        found = refusal.search(str(error))
        if found:
            return found.group(1)
    return None


def _open(source: str | io.BytesIO) -> contextlib.AbstractContextManager[IO[bytes]]:
    if isinstance(source, io.BytesIO):
        source.seek(0)
        return contextlib.nullcontext(source)
    return open(source, "rb")
