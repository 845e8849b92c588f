"""to_torchscript (script and trace) and to_onnx: the exported model computes what the module computes."""

from __future__ import annotations

import pytest
import torch

import trellis
from trellis.errors import ConfigurationError


class Net(trellis.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(4, 3)
        self.dropout = torch.nn.Dropout(0.5)  # differs between modes: exports must be in eval mode
        self.example_input_array = torch.randn(2, 4)

    def forward(self, x):
        return self.dropout(torch.relu(self.layer(x)))


def _eval_output(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.nn.Module.train(module, False)(x)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("method", ["script", "trace"])
def test_to_torchscript_exports_the_eval_mode_model_and_keeps_the_module_s_mode(tmp_path, method):
    net = Net()
    x = torch.randn(5, 4)
    exported = net.to_torchscript(file_path=tmp_path / "net.pt", method=method)
    assert net.training
    assert isinstance(exported, torch.jit.ScriptModule)
    loaded = torch.jit.load(tmp_path / "net.pt")
    assert torch.equal(loaded(x), _eval_output(Net(), x))
    assert torch.equal(exported(x), loaded(x))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tracing_needs_inputs_and_takes_them_from_example_inputs():
    net = Net()
    net.example_input_array = None
    with pytest.raises(ConfigurationError, match="example_inputs=.*example_input_array"):
        net.to_torchscript(method="trace")
    traced = net.to_torchscript(method="trace", example_inputs=torch.randn(1, 4))
    x = torch.randn(3, 4)
    assert torch.equal(traced(x), _eval_output(Net(), x))
    with pytest.raises(ConfigurationError, match="method='script' or method='trace'"):
        net.to_torchscript(method="compile")


@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning")
def test_to_onnx_writes_a_model_onnx_checks(tmp_path):
    import onnx

    net = Net()
    net.to_onnx(tmp_path / "net.onnx", dynamo=False)
    model = onnx.load(str(tmp_path / "net.onnx"))
    onnx.checker.check_model(model)
    assert [tuple(d.dim_value for d in i.type.tensor_type.shape.dim) for i in model.graph.input] == [(2, 4)]
    assert net.training
    with pytest.raises(ConfigurationError, match="input_sample=.*example_input_array"):
        _without_example(Net()).to_onnx(tmp_path / "none.onnx")


def _without_example(net: Net) -> Net:
    net.example_input_array = None
    return net


def test_to_onnx_without_onnx_says_how_to_install_it(monkeypatch, tmp_path):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "onnx" else real_find_spec(name, *args))
    with pytest.raises(ModuleNotFoundError, match="pip install onnx"):
        Net().to_onnx(tmp_path / "net.onnx")


@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning")
def test_exports_bring_the_input_through_the_batch_transfer_hooks(tmp_path):
    class Transformed(Net):
        def __init__(self) -> None:
            super().__init__()
            self.example_input_array = {"features": torch.randn(2, 4)}
            self.seen = []

        def on_before_batch_transfer(self, batch, dataloader_idx):
            self.seen.append("before")
            return batch["features"]

        def on_after_batch_transfer(self, batch, dataloader_idx):
            self.seen.append("after")
            return batch * 2

    net = Transformed()
    net.to_onnx(tmp_path / "net.onnx", dynamo=False)
    assert net.seen == ["before", "after"]
