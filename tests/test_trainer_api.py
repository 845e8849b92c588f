"""The Trainer methods a module's code reaches for: print, init_module, log_dir (rank zero's on every rank),
loggers and logger assignment, is_last_batch."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import pytest
import torch

import trellis
from support import TinyRegressor, loader, quiet_trainer
from trellis.plugin import Logger, Strategy
from trellis.testing.processes import run

JOB = Path(__file__).parent / "ddp_module_api_job.py"


def test_print_speaks_on_local_rank_zero_only(capsys, monkeypatch):
    trainer = quiet_trainer()
    trainer.print("shown", 1, sep="-")
    monkeypatch.setattr(type(trainer.strategy), "local_rank", property(lambda strategy: 1))
    trainer.print("not shown")
    assert capsys.readouterr().out == "shown-1\n"


@pytest.mark.parametrize("precision, dtype", [("32-true", torch.float32), ("64-true", torch.float64),
                                              ("bf16-true", torch.bfloat16)])
def test_init_module_creates_tensors_on_the_device_in_the_precision_s_dtype(precision, dtype):
    trainer = quiet_trainer(precision=precision)
    with trainer.init_module():
        module = TinyRegressor()
        extra = torch.zeros(2)
    assert module.dtype == dtype and {parameter.dtype for parameter in module.parameters()} == {dtype}
    assert extra.dtype == dtype and extra.device == trainer.strategy.root_device == module.device
    assert torch.get_default_dtype() == torch.float32 and torch.zeros(1).dtype == torch.float32


def test_init_module_with_empty_init_skips_the_initialisation():
    trainer = quiet_trainer()
    torch.manual_seed(0)
    with trainer.init_module(empty_init=True):
        torch.nn.Linear(64, 64)
    untouched = torch.rand(1)  # torch.nn.init drew nothing from the generator
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    with trainer.init_module(empty_init=False):
        initialised = torch.nn.Linear(64, 64)
    assert torch.equal(untouched, expected) and not torch.equal(torch.rand(1), expected)
    torch.manual_seed(0)
    assert torch.equal(initialised.weight, torch.nn.Linear(64, 64).weight)


class ShardingStrategy(Strategy):
    """A strategy that creates layers sharded in configure_model (like FSDP)."""

    name = "sharding_for_test"

    def model_init_context(self):
        return contextlib.nullcontext()


def test_init_module_under_a_sharding_strategy_says_to_use_configure_model():
    trainer = quiet_trainer(strategy=ShardingStrategy())
    with pytest.warns(UserWarning, match="configure_model"), trainer.init_module():
        TinyRegressor()


class SaveDirLogger(Logger):
    """A logger with a save directory but no run directory of its own (as MLflow's, wandb's)."""

    name = "save_dir_only"

    def __init__(self, save_dir: str) -> None:
        self.save_dir = save_dir

    def log_metrics(self, metrics, step):
        pass


def test_log_dir_is_the_first_logger_s_run_directory_else_its_save_dir_else_the_root(tmp_path):
    with_csv = trellis.Trainer(logger="csv", default_root_dir=tmp_path, enable_progress_bar=False)
    assert with_csv.log_dir == with_csv.logger.log_dir == str(tmp_path / "lightning_logs" / "version_0")
    assert quiet_trainer(logger=SaveDirLogger(str(tmp_path / "runs"))).log_dir == str(tmp_path / "runs")
    assert quiet_trainer(default_root_dir=tmp_path).log_dir == str(tmp_path)


@pytest.mark.slow
def test_under_ddp_every_rank_reads_rank_zero_s_log_dir_and_all_gather_passes_gradients(tmp_path):
    result = run([sys.executable, str(JOB), str(tmp_path)], timeout=240)
    assert result.returncode == 0, result.stderr
    rank0, rank1 = (json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1))
    version_0 = str(tmp_path / "lightning_logs" / "version_0")
    assert rank0["log_dir"] == rank1["log_dir"] == version_0
    assert rank1["own_version_dir"] != version_0  # what rank 1's logger would say on its own
    assert rank0["gathered"] == rank1["gathered"] == [1.0, 2.0]
    # each rank's loss is (rank + 1) * sum(gathered): both tensors get 1 + 2 from the two ranks' backward
    assert rank0["gradient"] == rank1["gradient"] == [3.0]
    assert rank0["plain_ranks"] == [0, 1] and rank1["plain_numbers"] == [2.5, 2.5]


class RecordingLogger(Logger):
    name = "recording"

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def log_metrics(self, metrics, step):
        self.rows.append(dict(metrics))


def test_loggers_and_logger_can_be_replaced_before_fit(tmp_path):
    trainer = trellis.Trainer(max_steps=2, log_every_n_steps=1, default_root_dir=tmp_path, enable_progress_bar=False,
                              enable_model_summary=False, enable_checkpointing=False)
    recorder = RecordingLogger()
    trainer.logger = recorder
    assert trainer.loggers == [recorder] and trainer.logger is recorder
    trainer.fit(TinyRegressor(), loader())
    assert [row["train_loss"] > 0 for row in recorder.rows] == [True, True]
    trainer.logger = None
    assert trainer.loggers == [] and trainer.logger is None and trainer.log_dir == str(tmp_path)
    trainer.loggers = [recorder]
    assert trainer.logger is recorder


def test_is_last_batch_says_whether_the_training_batch_ends_its_epoch():
    seen = []

    class Recording(TinyRegressor):
        def training_step(self, batch, batch_idx):
            seen.append(self.trainer.is_last_batch)
            return super().training_step(batch, batch_idx)

    quiet_trainer(max_epochs=2, limit_train_batches=3).fit(Recording(), loader())
    assert seen == [False, False, True] * 2
