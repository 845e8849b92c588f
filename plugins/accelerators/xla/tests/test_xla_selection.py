"""Choosing the XLA plugin: entry points, availability and errors, with or without torch_xla."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
import warnings

import pytest

import trellis
from trellis.errors import ConfigurationError
from trellis.plugin import find_plugin, load_plugin
from trellis_xla import XLAAccelerator, XLAStrategy, availability

no_torch_xla = pytest.mark.skipif(importlib.util.find_spec("torch_xla") is not None,
                                  reason="checks the behaviour where torch_xla is not installed")


@pytest.mark.parametrize(("role", "name", "expected"),
                         [("accelerator", "xla", XLAAccelerator), ("accelerator", "tpu", XLAAccelerator),
                          ("strategy", "xla", XLAStrategy)])
def test_entry_points_resolve_by_name_and_alias(role, name, expected) -> None:
    assert load_plugin(role, name) is expected
    assert find_plugin(role, name).distribution == "trellis-xla"


def test_torch_xla_is_an_extra_so_a_plain_install_keeps_the_users_torch() -> None:
    requirements = importlib.metadata.requires("trellis-xla")
    pulling_torch_xla = [line for line in requirements if line.startswith("torch_xla")]
    assert pulling_torch_xla and all("extra ==" in line for line in pulling_torch_xla)
    assert any('extra == "tpu"' in line for line in pulling_torch_xla)


def test_availability_check_imports_no_torch_xla() -> None:
    code = "import sys, trellis_xla; trellis_xla.XLAAccelerator.is_available(); print('torch_xla' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@no_torch_xla
def test_choosing_xla_without_torch_xla_says_what_to_install() -> None:
    assert not XLAAccelerator.is_available()
    with pytest.raises(ConfigurationError, match=r"accelerator='tpu' is not available: torch_xla is not installed: "
                                                 r"pip install 'trellis-xla\[tpu\]'"):
        trellis.Trainer(accelerator="tpu", logger=False)


def test_without_an_xla_device_the_reason_names_pjrt_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PJRT_DEVICE", raising=False)
    monkeypatch.setattr(availability, "torch_xla_installed", lambda: True)
    monkeypatch.setattr(availability, "tpu_device_files", lambda: [])
    assert not XLAAccelerator.is_available()
    assert "Set PJRT_DEVICE=TPU, CUDA or CPU" in XLAAccelerator.unavailable_reason()


def test_pjrt_device_and_tpu_device_nodes_make_it_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(availability, "torch_xla_installed", lambda: True)
    monkeypatch.setenv("PJRT_DEVICE", "cpu")
    assert availability.pjrt_device() == "CPU" and XLAAccelerator.is_available()
    monkeypatch.delenv("PJRT_DEVICE")
    monkeypatch.setattr(availability, "tpu_device_files", lambda: ["/dev/accel0"])
    assert availability.pjrt_device() == "TPU" and XLAAccelerator.is_available()


@pytest.fixture
def four_cpu_xla_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    """XLA's CPU device showing 4 devices; choosing needs torch_xla findable, never imported."""
    monkeypatch.setattr(availability, "torch_xla_installed", lambda: True)
    monkeypatch.setenv("PJRT_DEVICE", "CPU")
    monkeypatch.setenv("CPU_NUM_DEVICES", "4")


def xla_trainer(**flags) -> trellis.Trainer:
    return trellis.Trainer(logger=False, enable_progress_bar=False, **flags)


@pytest.mark.parametrize("flags", [{"accelerator": "xla", "devices": 4}, {"accelerator": "tpu"}, {"tpu_cores": 4},
                                   {"accelerator": "xla", "devices": -1}])
def test_several_devices_run_spmd_in_this_process(four_cpu_xla_devices, flags) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # tpu_cores is the classic spelling
        strategy = xla_trainer(**flags).strategy
    assert isinstance(strategy, XLAStrategy) and strategy.spmd and not strategy.shard_weights
    assert strategy.devices == [0, 1, 2, 3]
    assert strategy.launcher is None and strategy.world_size == 1  # one process drives every device
    assert strategy.distributed_sampler_kwargs is None  # each batch is the global batch, split on the devices


def test_tpu_cores_is_the_classic_spelling_of_devices(four_cpu_xla_devices) -> None:
    with pytest.warns(DeprecationWarning, match=r"use accelerator='tpu', devices=4 instead"):
        xla_trainer(tpu_cores=4)


def test_one_device_runs_without_spmd(four_cpu_xla_devices) -> None:
    strategy = xla_trainer(accelerator="xla", devices=1).strategy
    assert isinstance(strategy, XLAStrategy) and not strategy.spmd and strategy.devices == [0]


def test_xla_fsdp_shards_the_weights_too(four_cpu_xla_devices) -> None:
    strategy = xla_trainer(accelerator="xla", devices=4, strategy="xla_fsdp").strategy
    assert isinstance(strategy, XLAStrategy) and strategy.spmd and strategy.shard_weights
    assert find_plugin("strategy", "xla_fsdp").distribution == "trellis-xla"


@pytest.mark.parametrize(("flags", "message"), [
    ({"devices": 2}, r"devices=\[0, 1\] was asked for: pass devices=4 \(or 'auto'\), or devices=1 for one device"),
    ({"devices": 1, "strategy": "xla_fsdp"}, r"devices=\[0\] with shard_weights=True was asked for: pass devices=4"),
    ({"devices": 4, "num_nodes": 2}, r"multi-host SPMD \(TPU pods\) is not implemented yet: pass num_nodes=1"),
])
def test_spmd_over_part_of_the_host_or_several_hosts_is_refused_with_the_fix(
    four_cpu_xla_devices, flags, message
) -> None:
    with pytest.raises(ConfigurationError, match=message) as error:
        xla_trainer(accelerator="xla", **flags)
    assert "num_nodes" in flags or "CPU_NUM_DEVICES sets how many devices there are" in str(error.value)


def test_strategy_refuses_other_accelerators() -> None:
    cpu = load_plugin("accelerator", "cpu")()
    with pytest.raises(ConfigurationError, match="pass accelerator='xla'"):
        XLAStrategy().connect(cpu, None, None, [0], 1)
