"""DeepSpeed's sharded checkpoint directories: the layout, and exporting one to a single fp32 file.

A checkpoint written by DeepSpeedStrategy is a directory (named like the file the Trainer asked for) that
DeepSpeed's engine wrote: every rank's optimizer and weight shards under the tag `checkpoint`, and the
Trainer's checkpoint dictionary, without weights and optimizer states, as DeepSpeed's client state.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from trellis.errors import CheckpointError
from trellis.plugin import PathLike

TAG = "checkpoint"
#: prefix the step runner adds to every parameter name inside the engine.
RUNNER_PREFIX = "module."
#: Trellis checkpoint keys the engine stores itself, left out of the client state.
ENGINE_OWNED_KEYS = ("state_dict", "optimizer_states")
#: the one client-state key the Trainer's dictionary is stored under (clear of DeepSpeed's own keys).
CLIENT_KEY = "trellis"


class WeightsInEngineCheckpoint(dict):
    """Stands for "state_dict" where the engine's checkpoint holds the weights: written by the engine on save
    (so none are gathered for the Trainer's dictionary), already loaded by it on resume."""


def is_deepspeed_checkpoint(path: PathLike) -> bool:
    return os.path.isfile(os.path.join(path, "latest")) or os.path.isdir(os.path.join(path, TAG))


def client_state(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """What goes to engine.save_checkpoint(client_state=...): the Trainer's dictionary without weights."""
    return {CLIENT_KEY: {key: value for key, value in checkpoint.items() if key not in ENGINE_OWNED_KEYS}}


def trainer_state(loaded_client_state: dict[str, Any] | None, path: PathLike) -> dict[str, Any]:
    """The Trainer's dictionary back from what engine.load_checkpoint returned."""
    if not loaded_client_state or CLIENT_KEY not in loaded_client_state:
        raise CheckpointError(
            f"{os.fspath(path)!r} is a DeepSpeed checkpoint without Trellis training state (written outside a "
            "Trainer?): resume from a checkpoint trainer.save_checkpoint or ModelCheckpoint wrote"
        )
    return dict(loaded_client_state[CLIENT_KEY])


def strip_runner_prefix(state_dict: dict[str, Any]) -> dict[str, Any]:
    return {key.removeprefix(RUNNER_PREFIX): value for key, value in state_dict.items()}


def fp32_state_dict(checkpoint_dir: PathLike) -> dict[str, torch.Tensor]:
    """The full float32 weights of a DeepSpeed checkpoint directory, named as in the user's module."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    _require_checkpoint(checkpoint_dir)
    state = get_fp32_state_dict_from_zero_checkpoint(os.fspath(checkpoint_dir), tag=_tag(checkpoint_dir))
    return strip_runner_prefix(state)


def convert_to_fp32_checkpoint(checkpoint_dir: PathLike, output_file: PathLike) -> dict[str, Any]:
    """Write a single-file Trellis checkpoint with the fp32 weights of a DeepSpeed checkpoint directory.

    The file loads without DeepSpeed: `MyModule.load_from_checkpoint(output_file)` or `torch.load`. Its
    hyperparameters, epoch and global step come from the run that wrote the directory.
    """
    from trellis.plugin import CHECKPOINT_FORMAT_VERSION

    state = _client_state_of(checkpoint_dir)
    checkpoint = {
        "format_version": state.get("format_version", CHECKPOINT_FORMAT_VERSION),
        "trellis_version": state.get("trellis_version", ""),
        "epoch": state.get("epoch", 0),
        "global_step": state.get("global_step", 0),
        "hyper_parameters": state.get("hyper_parameters", {}),
        "state_dict": fp32_state_dict(checkpoint_dir),
    }
    directory = os.path.dirname(os.fspath(output_file))
    if directory:
        os.makedirs(directory, exist_ok=True)
    partial = f"{os.fspath(output_file)}.partial"
    torch.save(checkpoint, partial)
    os.replace(partial, output_file)
    return checkpoint


def _client_state_of(checkpoint_dir: PathLike) -> dict[str, Any]:
    """The Trainer's dictionary stored beside the weights (read from rank zero's model-states file)."""
    _require_checkpoint(checkpoint_dir)
    states = os.path.join(checkpoint_dir, _tag(checkpoint_dir), "mp_rank_00_model_states.pt")
    if not os.path.isfile(states):
        states = os.path.join(checkpoint_dir, _tag(checkpoint_dir), "zero_pp_rank_0_mp_rank_00_model_states.pt")
    saved = torch.load(states, map_location="cpu", weights_only=False)
    return trainer_state({CLIENT_KEY: saved[CLIENT_KEY]} if CLIENT_KEY in saved else None, checkpoint_dir)


def _tag(checkpoint_dir: PathLike) -> str:
    latest = os.path.join(checkpoint_dir, "latest")
    if os.path.isfile(latest):
        with open(latest, encoding="utf-8") as handle:
            return handle.read().strip()
    return TAG


def _require_checkpoint(checkpoint_dir: PathLike) -> None:
    if not is_deepspeed_checkpoint(checkpoint_dir):
        raise CheckpointError(
            f"{os.fspath(checkpoint_dir)!r} is not a DeepSpeed checkpoint directory (no 'latest' file or "
            f"'{TAG}' folder): pass the directory trainer.save_checkpoint or ModelCheckpoint wrote under "
            "strategy='deepspeed'"
        )
