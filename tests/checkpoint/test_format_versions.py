"""What is not a loadable checkpoint is refused with the file, what is wrong and the fix."""

from __future__ import annotations

import pytest
import torch

from trellis.checkpointing import FORMAT_VERSION, check_version, load_checkpoint_file
from trellis.errors import CheckpointError, CheckpointMismatchError


def _refusal(tmp_path, content) -> str:
    path = tmp_path / "model.ckpt"
    torch.save(content, path)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint_file(path)
    message = str(caught.value)
    assert repr(str(path)) in message, "the message must name the file"
    return message


@pytest.mark.parametrize("version", [-1, "1", None, 1.0, True, [1]])
def test_a_format_version_that_is_no_version_is_named_with_the_fix(tmp_path, version):
    message = _refusal(tmp_path, {"state_dict": {}, "format_version": version})
    assert f"format_version {version!r}" in message and "set checkpoint['format_version']" in message


def test_a_newer_format_asks_for_an_upgrade(tmp_path):
    message = _refusal(tmp_path, {"state_dict": {}, "format_version": FORMAT_VERSION + 1})
    assert f"format version {FORMAT_VERSION + 1}" in message and "pip install -U trellis" in message


def test_a_bare_state_dict_is_told_how_to_load_its_weights(tmp_path):
    message = _refusal(tmp_path, {"layer.weight": torch.ones(2, 2), "layer.bias": torch.ones(2)})
    assert "without 'state_dict'" in message and "module.load_state_dict(torch.load(path))" in message


def test_checking_a_value_that_is_no_dictionary_names_its_type():
    with pytest.raises(CheckpointError, match="the checkpoint 'x.pt' holds a Tensor, not a checkpoint"):
        check_version(torch.ones(3), "x.pt")


def test_a_current_checkpoint_passes_unchanged(tmp_path):
    checkpoint = {"state_dict": {"w": torch.ones(1)}, "format_version": FORMAT_VERSION, "loops": {"epoch": 2}}
    torch.save(checkpoint, tmp_path / "model.ckpt")
    assert load_checkpoint_file(tmp_path / "model.ckpt")["loops"] == {"epoch": 2}


def test_weights_that_do_not_fit_the_model_name_the_file_the_entries_and_the_fix():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4))
    saved = {"0.weight": torch.zeros(5, 3), "0.bias": torch.zeros(4), "head.weight": torch.zeros(1)}
    with pytest.raises(RuntimeError) as caught:
        model.load_state_dict(saved)
    error = CheckpointMismatchError.from_load_error("runs/last.ckpt", "Classifier", caught.value)
    message = str(error)
    assert isinstance(error, CheckpointError) and isinstance(error, RuntimeError)
    assert "the checkpoint 'runs/last.ckpt' does not fit Classifier" in message
    assert "size mismatch for 0.weight" in message and "torch.Size([5, 3])" in message and '"head.weight"' in message
    assert "Classifier.load_from_checkpoint(path)" in message and "strict=False" in message
