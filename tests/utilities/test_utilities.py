"""trellis.utilities: the helpers Lightning users import from lightning.pytorch.utilities, same names and keys."""

from __future__ import annotations

import logging
import random
import warnings

import pytest
import torch

import trellis
from trellis.utilities import (
    MisconfigurationException,
    grad_norm,
    measure_flops,
    move_data_to_device,
    rank_zero_debug,
    rank_zero_info,
    rank_zero_only,
    rank_zero_warn,
    seed_everything,
)
from trellis.utilities.imports import package_available


@pytest.fixture
def rank(monkeypatch):
    """Set this process's global rank as a launcher would (RANK)."""
    for variable in ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        monkeypatch.delenv(variable, raising=False)
    return lambda value: monkeypatch.setenv("RANK", str(value))


def test_rank_zero_only_runs_on_rank_zero_and_returns_the_default_elsewhere(rank):
    calls = []

    @rank_zero_only
    def record(value):
        calls.append(value)
        return value

    rank(0)
    assert record(1) == 1
    rank(3)  # read when called: a process started by a launcher knows its rank only then
    assert record(2) is None
    assert rank_zero_only(lambda: "ran", default="skipped")() == "skipped"
    assert calls == [1] and rank_zero_only.rank == 3


def test_assigning_rank_zero_only_rank_overrides_the_environment(rank):
    rank(0)
    try:
        rank_zero_only.rank = 1
        assert rank_zero_only(lambda: "ran")() is None
    finally:
        rank_zero_only.rank = None
    assert rank_zero_only(lambda: "ran")() == "ran"


def test_info_and_warn_speak_on_rank_zero_only(rank, capsys):
    rank(0)
    rank_zero_info("epoch %d done", 3)
    with pytest.warns(UserWarning, match="careful") as record:
        rank_zero_warn("careful")
    assert record[0].filename == __file__  # points at the caller, not at trellis
    rank(1)
    rank_zero_info("not shown")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rank_zero_warn("not raised")
    assert capsys.readouterr().err == "epoch 3 done\n"


def test_rank_zero_debug_logs_to_the_trellis_logger(rank, caplog):
    rank(0)
    with caplog.at_level(logging.DEBUG, logger="trellis"):
        rank_zero_debug("detail")
    assert [record.getMessage() for record in caplog.records] == ["detail"]


def test_seed_everything_repeats_every_generator():
    assert seed_everything is trellis.seed_everything
    seed_everything(7)
    first = (random.random(), torch.rand(3))
    seed_everything(7)
    second = (random.random(), torch.rand(3))
    assert first[0] == second[0] and torch.equal(first[1], second[1])


def test_grad_norm_uses_lightnings_keys_and_the_norm_over_all_gradients():
    module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1, bias=False))
    module[0].bias.requires_grad_(False)
    module(torch.ones(4, 3)).sum().backward()
    norms = grad_norm(module, norm_type=2)
    gradients = {"0.weight": module[0].weight.grad, "1.weight": module[1].weight.grad}
    assert set(norms) == {"grad_2.0_norm/0.weight", "grad_2.0_norm/1.weight", "grad_2.0_norm_total"}
    for name, gradient in gradients.items():
        assert torch.allclose(norms[f"grad_2.0_norm/{name}"], gradient.norm())
    everything = torch.cat([gradient.flatten() for gradient in gradients.values()])
    assert torch.allclose(norms["grad_2.0_norm_total"], everything.norm())
    assert torch.allclose(grad_norm(module, "inf", group_separator="_")["grad_inf_norm_total"], everything.abs().max())
    with pytest.raises(ValueError, match="positive"):
        grad_norm(module, norm_type=0)


def test_measure_flops_counts_forward_and_backward_on_the_meta_device():
    with torch.device("meta"):
        model = torch.nn.Linear(32, 16, bias=False)
        batch = torch.randn(8, 32)
    forward = measure_flops(model, lambda: model(batch))
    assert forward == 2 * 8 * 32 * 16
    assert measure_flops(model, lambda: model(batch), lambda output: output.sum()) == 2 * forward  # + weight grad


def test_misconfiguration_exception_catches_trellis_configuration_errors():
    with pytest.raises(MisconfigurationException, match="max_epocs"):
        trellis.Trainer(max_epocs=3)


def test_move_data_to_device_moves_every_tensor_of_a_nested_batch():
    batch = {"x": torch.ones(2), "pair": (torch.zeros(1), "label")}
    moved = move_data_to_device(batch, torch.device("meta"))
    assert moved["x"].is_meta and moved["pair"][0].is_meta and moved["pair"][1] == "label"


def test_package_available_looks_without_importing():
    assert package_available("json") and not package_available("no_such_package_for_trellis")
