"""TrellisCLI (LightningCLI on Trellis), driven as users drive it: real scripts run in their own processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from support import run_python

pytestmark = pytest.mark.slow  # each test starts Python processes that import torch

MODELS = '''
import torch
import trellis
from torch.utils.data import DataLoader, TensorDataset


class Regressor(trellis.Module):
    """A linear regressor.

    Args:
        in_features: inputs per sample
        lr: SGD learning rate
    """

    def __init__(self, in_features: int = 4, lr: float = 0.1):
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(in_features, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def predict_step(self, batch, batch_idx):
        return self.layer(batch[0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class WideRegressor(Regressor):
    def __init__(self, in_features: int = 4, width: int = 8, lr: float = 0.1):
        super().__init__(in_features, lr)
        self.layer = torch.nn.Sequential(torch.nn.Linear(in_features, width), torch.nn.Linear(width, 1))


class Data(trellis.DataModule):
    def __init__(self, samples: int = 32, batch_size: int = 8, num_features: int = 4):
        super().__init__()
        self.samples, self.batch_size, self.num_features = samples, batch_size, num_features

    def _loader(self, seed):
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(self.samples, self.num_features, generator=generator)
        return DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=self.batch_size)

    def train_dataloader(self):
        return self._loader(0)

    def val_dataloader(self):
        return self._loader(1)

    def test_dataloader(self):
        return self._loader(2)

    def predict_dataloader(self):
        return self._loader(3)


class Marker(trellis.Callback):
    def on_fit_end(self, trainer, pl_module):
        print("MARKER fit ended")
'''

REPORT = '''
def report(cli):
    import json, os, torch
    trainer = cli.trainer
    print("REPORT " + json.dumps({
        "subcommand": cli.subcommand,
        "model": type(cli.model).__name__,
        "data": type(cli.datamodule).__name__ if cli.datamodule is not None else None,
        "hparams": dict(cli.model.hparams),
        "epoch": trainer.current_epoch,
        "step": trainer.global_step,
        "callbacks": [type(callback).__name__ for callback in trainer.callbacks],
        "optimizers": [type(optimizer).__name__ for optimizer in trainer.optimizers],
        "initial_seed": torch.initial_seed(),
        "result": cli.result,
        "log_dir": os.path.abspath(trainer.log_dir),
        "config_seed": cli.config.get(cli.subcommand, cli.config)["seed_everything"],
    }, default=str))
'''

RUN_SCRIPT = MODELS + REPORT + '''
from trellis.cli import TrellisCLI


class CLI(TrellisCLI):
    def before_fit(self):
        print("HOOK before_fit")

    def after_test(self):
        print("HOOK after_test")


if __name__ == "__main__":
    report(CLI(Regressor, Data))
'''

LIGHTNING_STYLE_SCRIPT = MODELS + REPORT + '''
import json

from trellis.cli import LightningCLI
from trellis.callbacks import EarlyStopping


class LinkedCLI(LightningCLI):
    def add_arguments_to_parser(self, parser):
        parser.link_arguments("data.num_features", "model.in_features")
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        parser.set_defaults({"early_stopping.monitor": "val_loss", "early_stopping.patience": 100})


if __name__ == "__main__":
    cli = LinkedCLI(Regressor, Data, run=False, seed_everything_default=1234,
                    trainer_defaults={"max_epochs": 2, "callbacks": Marker(), "enable_progress_bar": False},
                    save_config_kwargs={"overwrite": True})
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    results = cli.trainer.test(ckpt_path="best", datamodule=cli.datamodule)
    print("TEST " + json.dumps(results))
    report(cli)
'''

SUBCLASS_SCRIPT = REPORT + '''
import trellis
from trellis.cli import TrellisCLI

if __name__ == "__main__":
    report(TrellisCLI(trellis.Module, trellis.DataModule, subclass_mode_model=True, subclass_mode_data=True))
'''


@pytest.fixture
def project(tmp_path):
    (tmp_path / "models.py").write_text(MODELS)
    for name, source in {"train.py": RUN_SCRIPT, "lightning_style.py": LIGHTNING_STYLE_SCRIPT,
                         "subclasses.py": SUBCLASS_SCRIPT}.items():
        (tmp_path / name).write_text("from models import *\n" + source if name != "subclasses.py" else source)
    return tmp_path


def run(project: Path, script: str, *arguments: str, timeout: float = 240) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(project)}
    for variable in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "TRELLIS_CONFIG"):
        environment.pop(variable, None)
    return subprocess.run([sys.executable, script, *arguments], cwd=project, capture_output=True, text=True,
                          env=environment, timeout=timeout)


def report_of(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("REPORT ")]
    return json.loads(line[len("REPORT "):])


QUIET = ("--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false")


def test_fit_subcommand_builds_from_flags_runs_hooks_and_saves_the_resolved_config(project):
    result = run(project, "train.py", "fit", "--model.in_features=4", "--model.lr=0.05", "--data.samples=16",
                 "--trainer.max_epochs=2", "--trainer.default_root_dir=runs", *QUIET)
    report = report_of(result)
    assert report["subcommand"] == "fit" and (report["model"], report["data"]) == ("Regressor", "Data")
    assert report["hparams"] == {"in_features": 4, "lr": 0.05,  # the config, and how to rebuild from it
                                 "_instantiator": "trellis.config_cli.given_hparams.instantiate_module"}
    assert (report["epoch"], report["step"]) == (2, 4)  # 2 epochs of 16 samples in batches of 8
    assert report["config_seed"] == 0 and report["initial_seed"] == 0  # seed_everything_default=True
    assert "HOOK before_fit" in result.stdout and "HOOK after_test" not in result.stdout
    assert "SaveConfigCallback" in report["callbacks"]
    saved = yaml.safe_load((Path(report["log_dir"]) / "config.yaml").read_text())
    assert saved["model"] == {"in_features": 4, "lr": 0.05} and saved["data"]["samples"] == 16
    assert saved["trainer"]["max_epochs"] == 2 and saved["seed_everything"] == 0
    logged = [path.read_bytes() for path in Path(report["log_dir"]).iterdir() if path.is_file()]
    assert any(b"val_loss" in content for content in logged)  # the default logger's CSV or event file


def test_print_config_shows_the_resolved_config_and_runs_nothing(project):
    result = run(project, "train.py", "fit", "--model.lr=0.3", "--trainer.max_epochs=5", "--print_config")
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["model"] == {"in_features": 4, "lr": 0.3} and printed["trainer"]["max_epochs"] == 5
    assert "optimizer" in printed and "REPORT" not in result.stdout
    assert not (project / "lightning_logs").exists()


def test_a_config_file_with_flags_after_it_and_the_saved_config_reruns_the_same_run(project):
    config = project / "run.yaml"
    config.write_text(textwrap.dedent("""
        seed_everything: 7
        model:
          lr: 0.02
        data:
          batch_size: 4
        trainer:
          max_epochs: 1
          default_root_dir: runs
          enable_progress_bar: false
          logger:
            class_path: trellis_csv.CSVLogger
            init_args: {save_dir: runs, name: from_config}
          callbacks:
            - class_path: trellis.callbacks.EarlyStopping
              init_args: {monitor: val_loss, patience: 3}
    """))
    first = report_of(run(project, "train.py", "fit", "--config", str(config), "--data.samples=8", *QUIET))
    assert first["hparams"]["lr"] == 0.02 and first["step"] == 2 and first["initial_seed"] == 7
    assert "EarlyStopping" in first["callbacks"] and "from_config" in first["log_dir"]
    saved = Path(first["log_dir"]) / "config.yaml"
    second = report_of(run(project, "train.py", "fit", "--config", str(saved)))
    assert second["hparams"] == first["hparams"] and second["step"] == first["step"]
    assert second["log_dir"] != first["log_dir"]  # the logger gave the rerun its own version directory


def test_an_earlier_runs_config_is_not_overwritten(project):
    arguments = ("fit", "--trainer.max_epochs=1", "--trainer.logger=false", "--trainer.default_root_dir=runs",
                 "--trainer.enable_checkpointing=false", *QUIET)
    report_of(run(project, "train.py", *arguments, "--model.lr=0.01"))
    saved = project / "runs" / "config.yaml"
    before = saved.read_text()
    refused = run(project, "train.py", *arguments, "--model.lr=0.5")
    assert refused.returncode != 0
    assert "ConfigExistsError" in refused.stderr and "overwrite" in refused.stderr
    assert saved.read_text() == before


def test_test_and_predict_subcommands_use_a_checkpoint(project):
    fitted = report_of(run(project, "train.py", "fit", "--trainer.max_epochs=1", "--trainer.default_root_dir=runs",
                           "--model.lr=0.07", *QUIET))
    (checkpoint,) = Path(fitted["log_dir"]).parent.parent.glob("**/*.ckpt")
    tested = run(project, "train.py", "test", "--ckpt_path", str(checkpoint), "--trainer.default_root_dir=runs",
                 *QUIET)
    report = report_of(tested)
    assert report["subcommand"] == "test" and "HOOK after_test" in tested.stdout
    assert list(report["result"][0]) == ["test_loss"]
    assert report["hparams"]["lr"] == 0.07  # taken from the checkpoint, as LightningCLI does
    predicted = report_of(run(project, "train.py", "predict", "--ckpt_path", str(checkpoint),
                              "--trainer.default_root_dir=runs", *QUIET))
    assert predicted["subcommand"] == "predict" and len(predicted["result"]) == 4  # 32 samples / 8


def test_run_false_with_trainer_defaults_links_and_added_callbacks(project):
    arguments = ("--data.num_features=3", "--trainer.logger=false", "--trainer.default_root_dir=runs",
                 "--trainer.enable_model_summary=false")
    result = run(project, "lightning_style.py", *arguments)
    report = report_of(result)
    assert report["subcommand"] is None and report["initial_seed"] == 1234 and report["config_seed"] == 1234
    assert report["hparams"]["in_features"] == 3  # linked from data.num_features
    assert report["epoch"] == 2 and "MARKER fit ended" in result.stdout
    assert {"EarlyStopping", "Marker", "SaveConfigCallback"} <= set(report["callbacks"])
    assert list(json.loads(result.stdout.split("TEST ")[1].splitlines()[0])[0]) == ["test_loss"]
    report_of(run(project, "lightning_style.py", *arguments))  # overwrite=True: the same directory again


def test_subclass_mode_chooses_classes_by_import_path(project):
    report = report_of(run(project, "subclasses.py", "fit", "--model=models.WideRegressor",
                           "--model.init_args.width=3", "--data=models.Data", "--trainer.max_epochs=1",
                           "--trainer.logger=false", "--trainer.enable_checkpointing=false", *QUIET))
    assert (report["model"], report["data"], report["hparams"]["width"]) == ("WideRegressor", "Data", 3)
    refused = run(project, "subclasses.py", "fit", "--model=torch.nn.Linear", "--data=models.Data")
    assert refused.returncode == 2 and "torch.nn.Linear" in refused.stderr


def test_optimizer_and_scheduler_from_the_command_line_replace_configure_optimizers(project):
    result = run(project, "train.py", "fit", "--optimizer=Adam", "--optimizer.lr=0.01", "--lr_scheduler=StepLR",
                 "--lr_scheduler.step_size=1", "--trainer.max_epochs=1", "--trainer.logger=false",
                 "--trainer.enable_checkpointing=false", *QUIET)
    report = report_of(result)
    assert report["optimizers"] == ["Adam"]
    assert "configure_optimizers` will be overridden" in result.stderr


def test_a_misspelled_flag_names_itself(project):
    result = run(project, "train.py", "fit", "--trainer.max_epocs=3")
    assert result.returncode == 2 and "max_epocs" in result.stderr


def test_import_trellis_stays_light_and_the_cli_names_need_jsonargparse():
    light = run_python("""
        import sys, trellis
        print(sorted(name for name in sys.modules if name == "jsonargparse" or name.startswith("trellis.c")))
    """)
    assert light.returncode == 0, light.stderr
    assert "jsonargparse" not in light.stdout and "trellis.cli" not in light.stdout
    without = run_python("""
        import sys
        sys.modules["jsonargparse"] = None  # as if the cli extra were not installed
        from trellis.cli import OptimizerCallable, main  # no jsonargparse needed for these
        try:
            from trellis.cli import TrellisCLI
        except ModuleNotFoundError as error:
            print("ERROR", error)
        main(["plugins"])
    """)
    assert without.returncode == 0, without.stderr
    assert 'ERROR TrellisCLI (LightningCLI) needs jsonargparse: pip install "trellis[cli]"' in without.stdout
    assert "trellis-cpu" in without.stdout


def test_under_ddp_rank_zero_saves_the_config_and_every_rank_refuses_to_overwrite_it(project):
    arguments = ("fit", "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu",
                 "--trainer.max_epochs=1", "--trainer.logger=false", "--trainer.default_root_dir=runs",
                 "--trainer.enable_checkpointing=false", *QUIET)
    first = run(project, "train.py", *arguments)
    assert first.returncode == 0, first.stderr[-3000:]
    assert sorted(path.name for path in (project / "runs").iterdir()) == ["config.yaml"]
    saved = (project / "runs" / "config.yaml").read_text()
    second = run(project, "train.py", *arguments, "--model.lr=0.5")
    assert second.returncode != 0 and "ConfigExistsError: " in second.stderr
    assert (project / "runs" / "config.yaml").read_text() == saved
