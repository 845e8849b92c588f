"""The CUDA accelerator: parsing, errors and discovery run anywhere; the rest needs a GPU."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import trellis
from trellis.errors import ConfigurationError
from trellis.plugin import find_plugin, load_plugin
from trellis_cuda import CUDAAccelerator

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; this machine has none")


class Regression(trellis.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        features, target = batch
        loss = torch.nn.functional.mse_loss(self.layer(features), target)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def regression_loader() -> torch.utils.data.DataLoader:
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(64, 4, generator=generator)
    target = features @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(features, target), batch_size=16)


@pytest.fixture
def four_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend four GPUs are visible: parsing is plain logic over the count (no GPU on CI)."""
    monkeypatch.setattr(CUDAAccelerator, "device_count", classmethod(lambda cls: 4))


@pytest.mark.parametrize(
    ("devices", "expected"),
    [(2, [0, 1]), ([1, 3], [1, 3]), ("0,2", [0, 2]), ("3", [0, 1, 2]), (-1, [0, 1, 2, 3]), ("auto", [0, 1, 2, 3])],
)
def test_devices_parse_as_count_list_string_all_and_auto(four_gpus, devices, expected) -> None:
    assert CUDAAccelerator.parse_devices(devices) == expected


@pytest.mark.parametrize(("devices", "message"), [(5, "more cuda devices than the 4"),
                                                  ([0, 4], r"indices \[4\] do not exist"),
                                                  (0, "not a device count")])
def test_devices_beyond_what_is_visible_are_refused(four_gpus, devices, message) -> None:
    with pytest.raises(ConfigurationError, match=message):
        CUDAAccelerator.parse_devices(devices)


@pytest.mark.parametrize("name", ["cuda", "gpu"])
def test_entry_point_resolves_by_name_and_alias(name) -> None:
    assert load_plugin("accelerator", name) is CUDAAccelerator
    assert find_plugin("accelerator", name).distribution == "trellis-cuda"


def test_descriptor_outranks_cpu_and_speaks_nccl() -> None:
    cpu = load_plugin("accelerator", "cpu")
    assert CUDAAccelerator.auto_priority > cpu.auto_priority
    assert (CUDAAccelerator.device_type, CUDAAccelerator.process_group_backend) == ("cuda", "nccl")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_choosing_cuda_without_a_gpu_says_what_was_found() -> None:
    with pytest.raises(ConfigurationError, match="accelerator='gpu' is not available") as error:
        trellis.Trainer(accelerator="gpu", logger=False)
    if torch.version.cuda is None:
        assert "CPU-only build" in str(error.value) and "pip install torch --index-url" in str(error.value)


def test_hidden_gpus_are_named_as_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert "CUDA_VISIBLE_DEVICES='' hides every GPU" in CUDAAccelerator.unavailable_reason()


def test_missing_driver_is_named_as_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr("trellis_cuda.availability.driver_present", lambda: False)
    reason = CUDAAccelerator.unavailable_reason()
    assert "no NVIDIA driver was found" in reason and "--gpus all" in reason


def test_unknown_matmul_precision_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="float32_matmul_precision='fast' is unknown"):
        CUDAAccelerator(float32_matmul_precision="fast")


def test_importing_the_plugin_initialises_no_cuda() -> None:
    code = "import torch, trellis_cuda; trellis_cuda.CUDAAccelerator.is_available(); print(torch.cuda.is_initialized())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_pin_memory_is_turned_on_for_torch_dataloaders_unless_disabled() -> None:
    loader = regression_loader()
    assert CUDAAccelerator(pin_memory=False).wrap_dataloader(loader, torch.device("cuda", 0)).pin_memory is False
    assert CUDAAccelerator().wrap_dataloader(loader, torch.device("cuda", 0)).pin_memory is True


@pytest.mark.gpu
@needs_gpu
def test_training_on_a_gpu_lowers_the_loss_and_reports_memory(tmp_path) -> None:
    trellis.seed_everything(0)
    module = Regression()
    trainer = trellis.Trainer(accelerator="cuda", devices=1, max_epochs=5, logger=False, enable_progress_bar=False,
                              default_root_dir=tmp_path)
    trainer.fit(module, regression_loader())
    assert next(module.parameters()).device.type == "cuda"
    assert float(trainer.callback_metrics["loss"]) < 1.0
    stats = trainer.accelerator.device_stats(torch.device("cuda", 0))
    assert stats["memory_allocated_peak_mib"] > 0


@pytest.mark.gpu
@needs_gpu
def test_batches_arrive_on_the_gpu_from_pinned_memory() -> None:
    accelerator = CUDAAccelerator()
    loader = accelerator.wrap_dataloader(regression_loader(), torch.device("cuda", 0))
    host_batch = next(iter(loader))
    assert all(tensor.is_pinned() for tensor in host_batch)
    features, target = accelerator.batch_to_device(host_batch, torch.device("cuda", 0))
    torch.cuda.synchronize()
    assert features.device.type == "cuda" and torch.equal(features.cpu(), host_batch[0])


@pytest.mark.gpu
@needs_gpu
def test_global_settings_apply_at_setup_and_are_restored_at_teardown() -> None:
    before = (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision())
    accelerator = CUDAAccelerator(cudnn_benchmark=not before[0], float32_matmul_precision="medium")
    accelerator.setup_device(torch.device("cuda", 0))
    assert (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()) == (not before[0], "medium")
    assert torch.cuda.current_device() == 0
    accelerator.teardown()
    assert (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()) == before


@pytest.mark.gpu
@needs_gpu
def test_device_count_follows_cuda_visible_devices() -> None:
    code = "from trellis_cuda import CUDAAccelerator as A; print(A.device_count(), A.parse_devices('auto'))"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0"}
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert output.split()[0] == "1"
    env["CUDA_VISIBLE_DEVICES"] = ""
    output = subprocess.run([sys.executable, "-c", code.replace(", A.parse_devices('auto')", "")],
                            capture_output=True, text=True, check=True, env=env).stdout
    assert output.strip() == "0"
