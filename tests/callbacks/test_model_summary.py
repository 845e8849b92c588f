"""ModelSummary and RichModelSummary: Lightning's table of layers (parameters, mode, FLOPs, sizes) and totals."""

from __future__ import annotations

import logging

import pytest
import torch

import trellis
from support import loader
from trellis.callbacks import ModelSummary, RichModelSummary
from trellis.callbacks.model_summary import get_human_readable_count, summarize


class Classifier(trellis.Module):
    def __init__(self, with_example: bool = True) -> None:
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU())
        self.head = torch.nn.Linear(32, 3)
        self.scale = torch.nn.Parameter(torch.ones(1))  # a parameter outside any layer
        self.encoder[1].eval()
        for parameter in self.head.parameters():
            parameter.requires_grad = False
        if with_example:
            self.example_input_array = torch.randn(4, 8)

    def forward(self, x):
        return self.head(self.encoder(x)) * self.scale

    def training_step(self, batch, batch_idx):
        return torch.nn.functional.mse_loss(self(batch[0]).sum(1, keepdim=True), batch[1])


def numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(("count", "text"), [
    (0, "0  "), (123, "123  "), (1234, "1.2 K"), (2_000_000, "2.0 M"), (3e9, "3.0 B"), (4e14, "400 T"),
    (5e15, "5,000 T"),
])
def test_counts_are_abbreviated_as_lightning_does(count, text):
    assert get_human_readable_count(count) == text


def test_the_table_lists_layers_modes_flops_sizes_and_totals():
    module = Classifier()
    table = str(summarize(module, max_depth=1)).splitlines()
    assert [cell.strip() for cell in table[0].split("|")] == [
        "", "Name", "Type", "Params", "Mode", "FLOPs", "In sizes", "Out sizes"]
    assert set(table[1]) == {"-"} and len(table[1]) == len(table[0]) + 6  # the rule runs past the last column
    rows = [[cell.strip() for cell in line.split("|")] for line in table[2:5]]
    linear_flops = 2 * 4 * 8 * 32  # (4 x 8) @ (8 x 32): a multiply and an add per term
    assert rows[0] == ["0", "encoder", "Sequential", get_human_readable_count(numel(module.encoder)).strip(), "train",
                       get_human_readable_count(linear_flops).strip(), "[4, 8]", "[4, 32]"]
    assert rows[1] == ["1", "head", "Linear", str(numel(module.head)), "train",
                       get_human_readable_count(2 * 4 * 32 * 3).strip(), "[4, 32]", "[4, 3]"]
    assert rows[2] == ["", "other params", "n/a", "1", "n/a", "n/a", "n/a", "n/a"]
    trainable = numel(module) - numel(module.head)
    modules = list(module.modules())[1:]
    assert table[6:] == [
        f"{get_human_readable_count(trainable):<10}Trainable params",
        f"{get_human_readable_count(numel(module.head)):<10}Non-trainable params",
        f"{get_human_readable_count(numel(module)):<10}Total params",
        f"{numel(module) * 4 / 1e6:<10,.3f}Total estimated model params size (MB)",
        f"{sum(m.training for m in modules):<10}Modules in train mode",
        f"{sum(not m.training for m in modules):<10}Modules in eval mode",
        f"{get_human_readable_count(linear_flops + 2 * 4 * 32 * 3):<10}Total Flops",  # matmuls only
    ]
    assert module.encoder[1].training is False and module.training  # the modes are left as they were


def test_every_depth_and_no_example_input():
    module = Classifier(with_example=False)
    table = str(summarize(module, max_depth=-1)).splitlines()
    assert [line.split("|")[1].strip() for line in table[2:7]] == ["encoder", "encoder.0", "encoder.1", "encoder.2",
                                                                    "head"]
    assert table[4].split("|")[4].strip() == "eval"  # the batch norm layer
    assert "In sizes" not in table[0]
    no_layers = str(summarize(module, max_depth=0)).splitlines()
    assert no_layers[2].split("|")[1:4] == [" other params ", " n/a  ", f" {numel(module)}    "]  # all is "other"


def test_the_callback_shows_the_summary_when_fit_starts(caplog):
    trainer = trellis.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                              callbacks=[ModelSummary(max_depth=2)])
    with caplog.at_level(logging.INFO):
        trainer.fit(Classifier(), loader(32))
    assert "encoder.1 | BatchNorm1d" in caplog.text and "Total estimated model params size (MB)" in caplog.text


def test_the_rich_summary_draws_a_table(capsys):
    trainer = trellis.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                              callbacks=[RichModelSummary()])
    trainer.fit(Classifier(), loader(32))
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "Name" in line)
    assert [cell.strip() for cell in header.split("┃")[2:-1]] == [
        "Name", "Type", "Params", "Mode", "FLOPs", "In sizes", "Out sizes"]
    assert f"Total params: {get_human_readable_count(numel(Classifier()))}" in out
