"""Choosing the XLA plugin: entry points, availability and errors, with or without torch_xla."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys

import pytest

import trellis
from trellis import discovery
from trellis.errors import ConfigurationError
from trellis_xla import XLAAccelerator, XLAStrategy, availability

no_torch_xla = pytest.mark.skipif(importlib.util.find_spec("torch_xla") is not None,
                                  reason="checks the behaviour where torch_xla is not installed")


@pytest.mark.parametrize(("role", "name", "expected"),
                         [("accelerator", "xla", XLAAccelerator), ("accelerator", "tpu", XLAAccelerator),
                          ("strategy", "xla", XLAStrategy)])
def test_entry_points_resolve_by_name_and_alias(role, name, expected) -> None:
    assert discovery.load(role, name) is expected
    assert discovery.find(role, name).distribution == "trellis-xla"


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


def test_strategy_refuses_several_devices_and_other_accelerators() -> None:
    cpu = discovery.load("accelerator", "cpu")()
    with pytest.raises(ConfigurationError, match="pass accelerator='xla'"):
        XLAStrategy().connect(cpu, None, None, [0], 1)
    with pytest.raises(ConfigurationError, match="multi-core launch is not implemented yet: pass devices=1"):
        XLAStrategy().connect(XLAAccelerator(), None, None, [0, 1], 1)
