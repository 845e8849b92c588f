"""Training for real on XLA's CPU device (PJRT_DEVICE=CPU); needs torch_xla, skipped without it."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

torch_xla = pytest.importorskip("torch_xla", reason="torch_xla is not installed (the XLA venv of .ci/run has it)")

import torch  # noqa: E402
import torch_xla.debug.metrics as xla_metrics  # noqa: E402

from trellis.errors import ConfigurationError  # noqa: E402
from trellis_xla import XLAAccelerator, XLAStrategy  # noqa: E402

HELPERS = os.path.join(os.path.dirname(__file__), "xla_regression.py")
_spec = importlib.util.spec_from_file_location("xla_regression", HELPERS)
xla_regression = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(xla_regression)
regression_loader, train = xla_regression.regression_loader, xla_regression.train

os.environ.setdefault("PJRT_DEVICE", "CPU")
# XLA's runtime must start before the first backward pass of the process (torch_xla limitation).
torch_xla.device()

#: Adam over 24 steps: XLA's CPU device and eager CPU agree to ~1e-7 (float32 op-order differences).
LOSS_TOLERANCE = 1e-5


def test_loss_curve_matches_the_cpu_plugin(tmp_path) -> None:
    xla_module, xla_trainer = train("xla", tmp_path)
    cpu_module, _ = train("cpu", tmp_path)
    assert isinstance(xla_trainer.strategy, XLAStrategy)
    assert next(xla_module.parameters()).device.type == "xla"
    xla_losses = torch.stack([loss.cpu() for loss in xla_module.losses])
    cpu_losses = torch.stack(cpu_module.losses)
    assert len(xla_losses) == 24 and xla_losses[-8:].mean() < xla_losses[:8].mean() / 2
    torch.testing.assert_close(xla_losses, cpu_losses, rtol=0, atol=LOSS_TOLERANCE)


def test_a_step_runs_one_graph_and_reads_nothing_back(tmp_path) -> None:
    train("xla", tmp_path, max_epochs=1)  # compiles the step graph
    xla_metrics.clear_all()
    train("xla", tmp_path, max_epochs=2)
    executions = xla_metrics.metric_data("ExecuteTime")[0]
    reads = xla_metrics.counter_value("aten::_local_scalar_dense") or 0
    assert xla_metrics.metric_data("CompileTime") is None  # same graph every step: nothing new to compile
    assert executions <= 16 + 2  # 16 steps, plus the once-per-epoch loss check
    assert reads <= 2


def test_checkpoint_saved_on_xla_loads_on_cpu_without_torch_xla(tmp_path) -> None:
    module, trainer = train("xla", tmp_path, max_epochs=1)
    path = tmp_path / "xla.ckpt"
    trainer.save_checkpoint(path)
    expected = {name: tensor.cpu() for name, tensor in module.state_dict().items()}
    torch.save(expected, tmp_path / "expected.pt")
    code = (
        "import sys; sys.modules['torch_xla'] = None\n"
        "import torch, trellis\n"
        "from trellis.checkpointing import load_checkpoint_file\n"
        f"checkpoint = load_checkpoint_file({str(path)!r})\n"
        f"expected = torch.load({str(tmp_path / 'expected.pt')!r})\n"
        "assert all(t.device.type == 'cpu' for t in checkpoint['state_dict'].values())\n"
        "assert all(torch.equal(checkpoint['state_dict'][k], v) for k, v in expected.items())\n"
        "import runpy; helpers = runpy.run_path(sys.argv[1])\n"
        "regression_loader, Regression = helpers['regression_loader'], helpers['Regression']\n"
        "trainer = trellis.Trainer(accelerator='cpu', max_epochs=2, logger=False, enable_progress_bar=False,\n"
        "                         enable_model_summary=False, enable_checkpointing=False, "
        f"default_root_dir={str(tmp_path)!r})\n"
        f"trainer.fit(Regression(), regression_loader(), ckpt_path={str(path)!r})\n"
        "print(trainer.global_step)\n"
    )
    env = {**os.environ, "PJRT_DEVICE": ""}
    result = subprocess.run([sys.executable, "-c", code, HELPERS], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "16"  # resumed at step 8, trained the second epoch on CPU


def test_dataloader_batches_arrive_on_the_device() -> None:
    accelerator = XLAAccelerator()
    device = accelerator.device(0)
    features, target = next(iter(accelerator.wrap_dataloader(regression_loader(), device)))
    assert features.device == device and target.device == device


def test_metrics_report_on_request(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    train(XLAAccelerator(metrics_report=True), tmp_path, max_epochs=1)
    assert "Metric: ExecuteTime" in capsys.readouterr().out


def test_device_rng_state_replays_dropout_masks() -> None:
    accelerator = XLAAccelerator()
    ones = torch.ones(64, 64, device=accelerator.device(0))
    state = accelerator.rng_state()
    first = torch.nn.functional.dropout(ones, 0.5).cpu()
    assert accelerator.rng_state() != state  # drawing advanced the device's generator
    accelerator.load_rng_state(state)
    assert torch.equal(torch.nn.functional.dropout(ones, 0.5).cpu(), first)
    accelerator.load_rng_state({})  # a checkpoint from another device: nothing to restore, nothing changed
    assert not torch.equal(torch.nn.functional.dropout(ones, 0.5).cpu(), first)


def test_spmd_after_xla_started_without_it_says_to_enable_it_first(tmp_path) -> None:
    """This module started XLA without SPMD at import; torch_xla would crash switching now."""
    with pytest.raises(ConfigurationError, match=r"Call `torch_xla.runtime.use_spmd\(\)` at the top of the script"):
        train("xla", tmp_path, devices="auto", strategy="xla_fsdp")
