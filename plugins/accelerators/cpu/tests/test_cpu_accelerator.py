"""The CPU accelerator: device parsing, placement and discovery by name."""

from __future__ import annotations

import pytest
import torch

import trellis
from trellis.errors import ConfigurationError
from trellis_cpu import CPUAccelerator


def test_devices_mean_processes_on_cpu():
    assert CPUAccelerator.parse_devices("auto") == [0]
    assert CPUAccelerator.parse_devices(2) == [0, 1]
    assert CPUAccelerator.parse_devices("2") == [0, 1]


def test_device_indices_and_nonpositive_counts_are_refused_with_the_fix():
    with pytest.raises(ConfigurationError, match="process count"):
        CPUAccelerator.parse_devices([0, 1])
    with pytest.raises(ConfigurationError, match="positive number"):
        CPUAccelerator.parse_devices(0)


def test_chosen_by_name_and_by_auto_with_gloo_for_distributed_strategies():
    trainer = trellis.Trainer(accelerator="cpu", logger=False)
    assert isinstance(trainer.accelerator, CPUAccelerator)
    assert trainer.strategy.root_device == torch.device("cpu")
    assert CPUAccelerator.process_group_backend == "gloo"


def test_batches_stay_where_they_are():
    batch = {"x": torch.ones(2)}
    assert CPUAccelerator().batch_to_device(batch, torch.device("cpu")) is batch
