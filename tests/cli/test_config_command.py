"""The `trellis fit|validate|test|predict` config command and the argparse helpers for Trainer flags."""

from __future__ import annotations

import argparse
import importlib.util
import textwrap
from pathlib import Path

import pytest
import yaml

from trellis.argparse_support import add_argparse_args, from_argparse_args, trainer_flags
from trellis.config_cli import CONFIG_FILENAME, add_config_commands, main_config
from trellis.errors import ConfigurationError

needs_jsonargparse = pytest.mark.skipif(importlib.util.find_spec("jsonargparse") is None,
                                        reason="the config command needs the cli extra: pip install 'trellis[cli]'")

# seed_everything_default=True seeds 0 with a warning that no seed was given, as LightningCLI does
pytestmark = pytest.mark.filterwarnings(r"ignore:seed_everything\(\) found no seed:UserWarning")

DATA_MODULE = '''
import trellis
from torch.utils.data import DataLoader
from support import regression_data


class RegressionData(trellis.DataModule):
    """Random regression data.

    Args:
        samples: how many training samples
        batch_size: samples per batch
    """

    def __init__(self, samples: int = 64, batch_size: int = 16):
        super().__init__()
        self.samples, self.batch_size = samples, batch_size

    def train_dataloader(self):
        return DataLoader(regression_data(self.samples), batch_size=self.batch_size)

    def val_dataloader(self):
        return DataLoader(regression_data(32, seed=1), batch_size=self.batch_size)

    def test_dataloader(self):
        return DataLoader(regression_data(32, seed=2), batch_size=self.batch_size)
'''


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A user's package (cli_data.RegressionData) on sys.path, and a config file that uses it."""
    (tmp_path / "cli_data.py").write_text(DATA_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "run.yaml"
    config.write_text(textwrap.dedent(f"""
        model:
          class_path: support.TinyRegressor
          init_args: {{lr: 0.01}}
        data:
          class_path: cli_data.RegressionData
          init_args: {{batch_size: 8}}
        trainer:
          max_epochs: 1
          logger: csv
          default_root_dir: {tmp_path / 'runs'}
          enable_progress_bar: false
          enable_model_summary: false
          callbacks:
            - class_path: trellis.callbacks.EarlyStopping
              init_args: {{monitor: val_loss, patience: 5}}
    """))
    return tmp_path


def saved_config(root: Path) -> dict:
    (path,) = root.glob(f"runs/**/{CONFIG_FILENAME}")
    assert "config" not in yaml.safe_load(path.read_text())
    return yaml.safe_load(path.read_text())


@needs_jsonargparse
def test_fit_builds_everything_from_the_config_and_flags_win(project):
    main_config(["fit", "--config", str(project / "run.yaml"), "--model.lr=0.1", "--trainer.max_epochs=2",
                 "--data.samples=32"])
    saved = saved_config(project)
    assert saved["model"] == {"class_path": "support.TinyRegressor", "init_args": {"lr": 0.1}}
    assert saved["data"]["init_args"] == {"samples": 32, "batch_size": 8}
    assert saved["trainer"]["max_epochs"] == 2
    assert saved["trainer"]["callbacks"][0]["init_args"]["monitor"] == "val_loss"
    metrics = next(project.glob("runs/**/metrics.csv")).read_text()
    assert "val_loss" in metrics and "epoch" in metrics
    checkpoints = list(project.glob("runs/**/*.ckpt"))
    assert [path.name for path in checkpoints] == ["epoch=1-step=8.ckpt"]  # 2 epochs of 32 samples in 8s


@needs_jsonargparse
def test_the_saved_config_reruns_and_validate_reads_the_checkpoint(project):
    main_config(["fit", "--config", str(project / "run.yaml")])
    (saved_path,) = project.glob(f"runs/**/{CONFIG_FILENAME}")
    (checkpoint,) = project.glob("runs/**/*.ckpt")
    results = main_config(["validate", "--config", str(saved_path), "--ckpt_path", str(checkpoint),
                           "--trainer.enable_checkpointing=false"])
    assert list(results[0]) == ["val_loss"]
    configs = sorted(project.glob(f"runs/**/{CONFIG_FILENAME}"))
    assert len(configs) == 2  # the second run has its own versioned directory
    assert yaml.safe_load(configs[1].read_text())["ckpt_path"] == str(checkpoint)


@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty:UserWarning")
@needs_jsonargparse
def test_an_existing_config_is_not_overwritten_silently(project):
    arguments = ["fit", "--config", str(project / "run.yaml"), "--trainer.logger=false"]
    main_config(arguments)
    with pytest.raises(ConfigurationError, match="--overwrite_config=true"):
        main_config(arguments)
    main_config([*arguments, "--overwrite_config=true"])


@needs_jsonargparse
def test_help_lists_every_trainer_flag_with_its_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main_config(["fit", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    flags = list(trainer_flags())
    missing = [name for name in flags if f"--trainer.{name}" not in text]
    assert not missing
    assert "--model" in text and "--data" in text and "--ckpt_path" in text


@needs_jsonargparse
def test_a_misspelled_flag_is_an_error_naming_it(project, capsys):
    with pytest.raises(SystemExit):
        main_config(["fit", "--config", str(project / "run.yaml"), "--trainer.max_epocs=3"])
    assert "max_epocs" in capsys.readouterr().err


@needs_jsonargparse
def test_the_model_must_be_a_trellis_module(project, capsys):
    with pytest.raises(SystemExit):
        main_config(["fit", "--model=torch.nn.Linear", "--data=cli_data.RegressionData"])
    assert "torch.nn.Linear" in capsys.readouterr().err


def test_add_config_commands_lists_the_stages_in_an_argparse_cli():
    parser = argparse.ArgumentParser(prog="trellis")
    add_config_commands(parser.add_subparsers(dest="command"))
    assert all(stage in parser.format_help() for stage in ("fit", "validate", "test", "predict"))


def test_argparse_helpers_add_every_flag_and_build_a_trainer(tmp_path):
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.1)  # a script's own flag, ignored by the Trainer
    add_argparse_args(parser)
    arguments = parser.parse_args(["--max_epochs", "3", "--limit_train_batches", "0.5", "--limit_val_batches", "4",
                                   "--logger", "false", "--devices", "1", "--gradient_clip_val", "none",
                                   "--max_time", "00:00:01:00", "--enable_progress_bar", "no"])
    assert arguments.limit_train_batches == 0.5 and arguments.limit_val_batches == 4 and arguments.devices == 1
    assert arguments.logger is False and arguments.gradient_clip_val is None
    trainer = from_argparse_args(arguments, default_root_dir=tmp_path)
    assert trainer.max_epochs == 3 and trainer.max_time == 60.0 and trainer.loggers == []
    assert trainer.limit_train_batches == 0.5 and trainer.default_root_dir == str(tmp_path)
    defaults = vars(add_argparse_args(argparse.ArgumentParser()).parse_args([]))
    assert defaults["max_steps"] == -1 and defaults["accelerator"] == "auto" and "callbacks" not in defaults


def test_argparse_helpers_reject_a_value_of_the_wrong_type(capsys):
    parser = add_argparse_args(argparse.ArgumentParser())
    with pytest.raises(SystemExit):
        parser.parse_args(["--max_epochs", "three"])
    assert "max_epochs" in capsys.readouterr().err
