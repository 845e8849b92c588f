"""Reading offline wandb runs back: the `.wandb` transaction log that wandb-core writes.

wandb no longer ships a Python reader for it (reading moved into the Go wandb-core), so this reads the log's
block framing (the LevelDB log format, as wandb documents it) and decodes each record with wandb's own
protobuf `Record`.
"""

from __future__ import annotations

import json
import struct
import time

BLOCK_SIZE = 32768
RECORD_HEADER = struct.Struct("<IHB")  # crc32c, length, type (1 full, 2 first, 3 middle, 4 last)
FILE_HEADER = struct.Struct("<4sHB")  # ":W&B", magic, version


def read_records(path: str) -> list:
    """Every record of one transaction log, oldest first."""
    from wandb.proto import wandb_internal_pb2

    with open(path, "rb") as file:
        data = file.read()
    ident, _, _ = FILE_HEADER.unpack_from(data)
    if ident != b":W&B":
        raise ValueError(f"{path} is not a wandb transaction log (it starts with {ident!r})")
    records, offset, parts = [], FILE_HEADER.size, b""
    while offset + RECORD_HEADER.size <= len(data):
        room = BLOCK_SIZE - offset % BLOCK_SIZE
        if room < RECORD_HEADER.size:  # block trailer padding
            offset += room
            continue
        _, length, kind = RECORD_HEADER.unpack_from(data, offset)
        offset += RECORD_HEADER.size
        parts += data[offset:offset + length]
        offset += length
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(parts))
            parts = b""
    return records


def finished_records(path: str, timeout: float = 30.0) -> list:
    """The records once the run's exit record is there (wandb-core writes the log after finish() returns), or
    what is there after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        records = read_records(path)
        if any(record.WhichOneof("record_type") == "exit" for record in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


def history(records: list) -> dict[int, dict[str, float]]:
    """The history rows of one log by step (partial rows of one step merged), wandb's own `_` keys left out."""
    rows: dict[int, dict[str, float]] = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            rows.setdefault(record.history.step.num, {}).update(
                {key: value for key, value in row.items() if not key.startswith("_")}
            )
    return rows


def merged_history(paths: list[str]) -> list[tuple[int, str, float]]:
    """(step, key, value) of offline runs of one id, oldest first, merged as `wandb sync` uploads them: a
    resumed run's steps below the steps already uploaded are ignored."""
    merged: dict[int, dict[str, float]] = {}
    for path in paths:
        next_step = max(merged, default=-1) + 1
        for step, row in history(finished_records(path)).items():
            if step >= next_step:
                merged.setdefault(step, {}).update(row)
    return [(step, key, value) for step in sorted(merged) for key, value in merged[step].items()]
