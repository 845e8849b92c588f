"""Checks of what each role does on its own, without a Trainer."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from trellis.errors import TrellisError
from trellis.testing.subject import ConformanceFailure, ConformanceSkip, Subject, describe


def check_availability(subject: Subject, tmp_path: Path) -> None:
    """is_available() answers True or False without raising; unavailable says why; available has devices."""
    cls = subject.plugin_class()
    available = _call(cls, "is_available", "must return True or False and never raise: catch the backend's "
                      "ImportError or driver error and return False, then say why in unavailable_reason()")
    if not isinstance(available, bool):
        raise ConformanceFailure(f"{cls.__qualname__}.is_available() returned {available!r}: return True or False")
    if not available:
        reason = _call(cls, "unavailable_reason", "must return a message")
        if not isinstance(reason, str) or not reason.strip():
            raise ConformanceFailure(
                f"{cls.__qualname__}.unavailable_reason() returned {reason!r}: return what was found and what to "
                "install or set, users see it when they ask for this accelerator"
            )
        raise ConformanceSkip(f"accelerator {subject.name!r} is not available here: {reason}")
    count = _call(cls, "device_count", "must return how many devices this process can see")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ConformanceFailure(
            f"{cls.__qualname__}.is_available() is True but device_count() returned {count!r}: return the number "
            "of devices (at least 1) whenever is_available() is True"
        )


def check_parse_devices(subject: Subject, tmp_path: Path) -> None:
    """devices=1, "1" and "auto" give valid indices; 0 and more than exist are errors that say what to pass."""
    subject.require_available()
    cls = subject.plugin_class()
    count = cls.device_count()
    for devices in (1, "1"):
        parsed = _parse(cls, devices)
        if parsed != [0]:
            raise ConformanceFailure(
                f"{cls.__qualname__}.parse_devices({devices!r}) returned {parsed!r}: it must be [0]")
    parsed = _parse(cls, "auto")
    indices_valid = isinstance(parsed, list) and all(isinstance(index, int) and 0 <= index < count for index in parsed)
    if not indices_valid or not parsed or len(set(parsed)) != len(parsed):
        raise ConformanceFailure(
            f"{cls.__qualname__}.parse_devices('auto') returned {parsed!r}: return distinct device indices in "
            f"0..{count - 1} (device_count() is {count})"
        )
    for devices in (0, count + 1):
        try:
            parsed = cls.parse_devices(devices)
        except TrellisError as error:
            if not str(error).strip():
                raise ConformanceFailure(
                    f"{cls.__qualname__}.parse_devices({devices!r}) raised {type(error).__name__} with no message: "
                    "say what was wrong and what to pass"
                ) from None
            continue
        raise ConformanceFailure(
            f"{cls.__qualname__}.parse_devices({devices!r}) returned {parsed!r} "
            f"though device_count() is {count}: raise "
            "trellis.errors.ConfigurationError saying what to pass (the base Accelerator.parse_devices does)"
        )


def check_device_placement(subject: Subject, tmp_path: Path) -> None:
    """device(), setup_device(), batch_to_device(), device_stats() and teardown() work on device 0."""
    subject.require_available()
    accelerator = subject.build()
    cls_name = type(accelerator).__qualname__
    device = _call(accelerator, "device", "must return the torch.device for an index", 0)
    if not isinstance(device, torch.device) or device.type != accelerator.device_type:
        raise ConformanceFailure(
            f"{cls_name}.device(0) returned {device!r}, but device_type is {accelerator.device_type!r}: return "
            "torch.device(device_type, index), and keep device_type the torch device type your tensors live on"
        )
    _call(accelerator, "setup_device", "must prepare the process for the device", device)
    batch: dict[str, Any] = {"inputs": torch.arange(6.0).reshape(2, 3), "rest": (torch.tensor([1, 2]), "label")}
    moved = _call(accelerator, "batch_to_device", "must move every tensor of a nested batch", batch, device)
    tensors: tuple[Any, Any] = ((moved.get("inputs"), moved.get("rest", (None,))[0]) if isinstance(moved, dict)
                                else (None, None))
    if not all(isinstance(tensor, torch.Tensor) and tensor.device.type == device.type for tensor in tensors) or (
        moved["rest"][1] != "label"
    ):
        raise ConformanceFailure(
            f"{cls_name}.batch_to_device() returned {moved!r}: keep the batch's structure (dicts, tuples, other "
            "values) and put every tensor on the device; trellis.utils.collections.move_to_device does this"
        )
    if not torch.equal(tensors[0].cpu(), batch["inputs"]) or not torch.equal(tensors[1].cpu(), batch["rest"][0]):
        raise ConformanceFailure(f"{cls_name}.batch_to_device() changed the values of the batch: move, don't convert")
    stats = _call(accelerator, "device_stats", "must return a dict of numbers", device)
    if not isinstance(stats, dict) or not all(
        isinstance(key, str) and isinstance(value, (int, float)) for key, value in stats.items()
    ):
        raise ConformanceFailure(f"{cls_name}.device_stats() returned {stats!r}: return a dict of str -> number")
    _call(accelerator, "teardown", "must release what setup_device took")


def check_state_round_trip(subject: Subject, tmp_path: Path) -> None:
    """state_dict() holds only checkpoint-safe values, and load_state_dict() into a new object restores it."""
    original = subject.build(tmp_path)
    if subject.role == "logger":
        original.log_hyperparams({"learning_rate": 0.1})
        for step in range(3):
            original.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    state = _call(original, "state_dict", "must return a dict")
    if not isinstance(state, dict):
        raise ConformanceFailure(f"{type(original).__qualname__}.state_dict() returned {state!r}: return a dict")
    restored_state = _weights_only_copy(state, f"{type(original).__qualname__}.state_dict()")
    restored = subject.build(tmp_path)
    _call(restored, "load_state_dict", "must accept what state_dict() returned", restored_state)
    again = restored.state_dict()
    if not _same(again, state):
        raise ConformanceFailure(
            f"{type(original).__qualname__}: after load_state_dict(state) a new object's state_dict() is {again!r}, "
            f"not the {state!r} it was given; restore every field that state_dict() saves"
        )
    if subject.role == "logger":
        original.finalize("success")
        restored.finalize("success")


def check_checkpoint_round_trip(subject: Subject, tmp_path: Path) -> None:
    """save, exists, load (same tensors back) and remove work on one path."""
    checkpoint_io = subject.build()
    name = type(checkpoint_io).__qualname__
    path = tmp_path / "round_trip.ckpt"
    checkpoint = {"state_dict": {"weight": torch.randn(3, 2), "step": torch.tensor(5)}, "epoch": 2, "tags": ["a", "b"]}
    if checkpoint_io.exists(path):
        raise ConformanceFailure(f"{name}.exists() is True for {path}, where nothing was saved")
    _call(checkpoint_io, "save_checkpoint", "must write the checkpoint", checkpoint, path)
    checkpoint_io.teardown()
    if not checkpoint_io.exists(path):
        raise ConformanceFailure(f"{name}.exists() is False right after save_checkpoint({path}) and teardown()")
    loaded = _call(checkpoint_io, "load_checkpoint", "must read back what save_checkpoint wrote", path)
    if not _same(loaded, checkpoint):
        raise ConformanceFailure(
            f"{name}.load_checkpoint() returned {loaded!r}, not the {checkpoint!r} that was saved: return the same "
            "dictionary, with equal tensors"
        )
    _call(checkpoint_io, "remove_checkpoint", "must delete the checkpoint", path)
    if checkpoint_io.exists(path):
        raise ConformanceFailure(f"{name}.exists() is still True after remove_checkpoint({path})")


class CodeOnLoad:
    """An object of an arbitrary class: unpickling it calls code, so a safe loader must refuse it."""


def check_safe_loading(subject: Subject, tmp_path: Path) -> None:
    """load_checkpoint refuses objects that run code unless weights_only=False is passed."""
    checkpoint_io = subject.build()
    name = type(checkpoint_io).__qualname__
    path = tmp_path / "unsafe.ckpt"
    checkpoint_io.save_checkpoint({"state_dict": {}, "payload": CodeOnLoad()}, path)
    checkpoint_io.teardown()
    try:
        checkpoint_io.load_checkpoint(path)
    except Exception:  # any refusal is fine; the message quality is the plugin's to choose
        pass
    else:
        raise ConformanceFailure(
            f"{name}.load_checkpoint({path}) loaded an object of an arbitrary class "
            "(unpickling it calls code): load with "
            "torch.load(..., weights_only=weights_only) (default True), so that only tensors and plain values load"
        )
    checkpoint_io.load_checkpoint(path, weights_only=False)


def check_detection(subject: Subject, tmp_path: Path) -> None:
    """detect() answers True or False; when detected, ranks, world size and address are consistent."""
    cls = subject.plugin_class()
    detected = _call(cls, "detect", "must return True or False and never raise")
    if not isinstance(detected, bool):
        raise ConformanceFailure(f"{cls.__qualname__}.detect() returned {detected!r}: return True or False")
    if not detected:
        raise ConformanceSkip(
            f"cluster environment {subject.name!r} is not detected in this process; run the kit inside a job it "
            "launched to check its ranks"
        )
    environment = subject.build()
    world_size, rank, local_rank = environment.world_size(), environment.global_rank(), environment.local_rank()
    if not (isinstance(world_size, int) and world_size >= 1 and 0 <= rank < world_size and 0 <= local_rank <= rank):
        raise ConformanceFailure(
            f"{cls.__qualname__}: world_size()={world_size!r}, global_rank()={rank!r}, local_rank()={local_rank!r} are "
            "inconsistent: return ints with 0 <= local_rank <= global_rank < world_size"
        )
    if not isinstance(environment.main_address, str) or not isinstance(environment.main_port, int):
        raise ConformanceFailure(
            f"{cls.__qualname__}: main_address={environment.main_address!r} and main_port={environment.main_port!r}: "
            "return the rendezvous host as a str and its port as an int"
        )


def _call(target: Any, method: str, duty: str, *args: Any) -> Any:
    """Call a plugin method; an exception becomes a failure naming the method and its duty."""
    try:
        return getattr(target, method)(*args)
    except Exception as error:
        owner = target.__qualname__ if isinstance(target, type) else type(target).__qualname__
        raise ConformanceFailure(f"{owner}.{method}() raised {describe(error)}; it {duty}") from error


def _parse(cls: type, devices: Any) -> Any:
    return _call(cls, "parse_devices", "must turn devices= into a list of device indices", devices)


def _weights_only_copy(state: dict[str, Any], what: str) -> dict[str, Any]:
    """The state after a torch.save / torch.load(weights_only=True) trip, as a checkpoint would hold it."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    try:
        return torch.load(buffer, weights_only=True)
    except Exception as error:
        raise ConformanceFailure(
            f"{what} returned {state!r}, which a safe (weights_only) checkpoint load refuses ({error}): keep only "
            "tensors, numbers, strings, None and lists/tuples/dicts of them"
        ) from None


def _same(left: Any, right: Any) -> bool:
    """Equality that compares tensors by value."""
    if isinstance(left, torch.Tensor) or isinstance(right, torch.Tensor):
        both = isinstance(left, torch.Tensor) and isinstance(right, torch.Tensor)
        return both and torch.equal(left.cpu(), right.cpu())
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_same(left[key], right[key]) for key in left)
    if isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
        return len(left) == len(right) and all(_same(a, b) for a, b in zip(left, right))
    return left == right
