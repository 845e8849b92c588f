"""`trellis port` on Lightning-style programs written here: every import style, then the ported programs run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from trellis.cli import main
from trellis.porting.rewrite import port_source

TINY_MODEL = textwrap.indent(textwrap.dedent('''
    def __init__(self, lr: float = 0.1):
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch).pow(2).mean()
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.layer(batch).pow(2).mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
'''), " " * 12)

PROGRAMS = {
    "alias_l.py": '''
        import os, lightning as L
        import torch
        from torch.utils.data import DataLoader


        class Model(L.LightningModule):
        ''' + TINY_MODEL + '''

        class Data(L.LightningDataModule):
            def train_dataloader(self):
                return DataLoader(torch.randn(16, 4), batch_size=4)

            def val_dataloader(self):
                return DataLoader(torch.randn(8, 4), batch_size=4)


        if __name__ == "__main__":
            L.seed_everything(42)
            stopper = L.pytorch.callbacks.EarlyStopping(monitor="val_loss", patience=5)
            trainer = L.Trainer(max_epochs=2, callbacks=[stopper], default_root_dir=os.getcwd(),
                                enable_progress_bar=False)
            trainer.fit(Model(), datamodule=Data())
            assert any(isinstance(callback, L.Callback) for callback in trainer.callbacks)
            print("RESULT", type(trainer).__module__, trainer.global_step, trainer.current_epoch)
    ''',
    "alias_pl.py": '''
        import pytorch_lightning as pl
        import torch
        from pytorch_lightning.callbacks import ModelCheckpoint
        from pytorch_lightning.utilities import rank_zero_only
        from torch.utils.data import DataLoader


        class Model(pl.LightningModule):
        ''' + TINY_MODEL + '''

        @rank_zero_only
        def announce(text):
            print(text)


        if __name__ == "__main__":
            name = "naïve"; base = pl.LightningModule  # non-ASCII before a rewritten name on the same line
            logger = pl.loggers.CSVLogger(save_dir="logs")
            checkpoint = ModelCheckpoint(monitor="val_loss", save_top_k=1)
            trainer = pl.Trainer(max_epochs=1, logger=logger, callbacks=[checkpoint], enable_progress_bar=False)
            trainer.fit(Model(), DataLoader(torch.randn(16, 4), batch_size=4), DataLoader(torch.randn(8, 4)))
            announce(f"RESULT {issubclass(Model, base)} {type(logger).__name__} {checkpoint.best_model_path != ''}")
    ''',
    "from_imports.py": '''
        import torch
        from torch.utils.data import DataLoader

        from lightning.pytorch import (
            LightningModule,  # the base class
            Trainer,
            seed_everything,
        )
        from lightning.pytorch.callbacks import (
            EarlyStopping,
            LearningRateMonitor,  # logs the learning rate
        )
        from lightning.pytorch.demos.boring_classes import BoringModel, RandomDataset
        from lightning.pytorch.utilities.types import STEP_OUTPUT


        class Model(LightningModule):
            def __init__(self):
                super().__init__()
                self.inner = BoringModel()

            def training_step(self, batch, batch_idx) -> STEP_OUTPUT:
                return self.inner.training_step(batch, batch_idx)

            def configure_optimizers(self):
                return self.inner.configure_optimizers()


        def describe(module: LightningModule) -> str:
            return type(module).__mro__[1].__name__


        if __name__ == "__main__":
            seed_everything(1)
            trainer = Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                              callbacks=[EarlyStopping(monitor="train_loss", patience=100, strict=False)])
            model = Model()
            trainer.fit(model, DataLoader(RandomDataset(32, 64), batch_size=2))
            print("RESULT", describe(model), trainer.global_step)
    ''',
}


def write(root: Path, files: dict[str, str]) -> None:
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip())


def port(*arguments: str, capsys) -> tuple[int, str, str]:
    code = main(["port", *arguments])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_without_lightning(script: Path, *arguments: str) -> subprocess.CompletedProcess:
    """Run a ported program where importing Lightning would fail, so every Lightning name must be gone."""
    runner = ("import runpy, sys; sys.modules.update(lightning=None, pytorch_lightning=None); "
              f"sys.argv = {[str(script), *arguments]!r}; sys.path.insert(0, {str(script.parent)!r}); "
              f"runpy.run_path({str(script)!r}, run_name='__main__')")
    environment = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return subprocess.run([sys.executable, "-c", runner], cwd=script.parent, capture_output=True, text=True,
                          env=environment, timeout=300)


def result_line(process: subprocess.CompletedProcess) -> list[str]:
    assert process.returncode == 0, process.stderr[-3000:]
    (line,) = [line for line in process.stdout.splitlines() if line.startswith("RESULT")]
    return line.split()[1:]


@pytest.mark.slow
def test_ported_programs_of_every_import_style_run_under_trellis(tmp_path, capsys):
    write(tmp_path, PROGRAMS)
    code, out, _ = port(str(tmp_path), capsys=capsys)
    assert code == 0, out
    assert "changed 3 of 3 Python files" in out
    alias_l = (tmp_path / "alias_l.py").read_text()
    assert "import os\nimport trellis\nimport trellis.callbacks\n" in alias_l
    assert "class Model(trellis.Module):" in alias_l and "trellis.callbacks.EarlyStopping(" in alias_l
    assert "trellis.seed_everything(42)" in alias_l and "trellis.Trainer(" in alias_l
    assert result_line(run_without_lightning(tmp_path / "alias_l.py")) == ["trellis.trainer", "8", "2"]

    alias_pl = (tmp_path / "alias_pl.py").read_text()
    assert "import trellis_csv" in alias_pl and "trellis_csv.CSVLogger(save_dir=" in alias_pl
    assert 'name = "naïve"; base = trellis.Module' in alias_pl
    assert "from trellis.callbacks import ModelCheckpoint" in alias_pl
    assert result_line(run_without_lightning(tmp_path / "alias_pl.py")) == ["True", "CSVLogger", "True"]

    from_imports = (tmp_path / "from_imports.py").read_text()
    assert "from trellis import (\n    Module,  # the base class\n    Trainer,\n    seed_everything,\n)" in from_imports
    assert "    LearningRateMonitor,  # logs the learning rate\n" in from_imports  # comments survive
    assert "class Model(Module):" in from_imports and "def describe(module: Module)" in from_imports
    assert "from trellis.utilities.types import STEP_OUTPUT" in from_imports
    assert "from trellis.demos.boring_classes import BoringModel, RandomDataset" in from_imports
    assert result_line(run_without_lightning(tmp_path / "from_imports.py")) == ["Module", "3"]


def test_dry_run_prints_a_unified_diff_and_writes_nothing(tmp_path, capsys):
    write(tmp_path,
          {"model.py": "from lightning.pytorch import LightningModule\n\n\nclass M(LightningModule):\n    pass\n"})
    before = (tmp_path / "model.py").read_text()
    os.chdir(tmp_path)
    code, out, err = port("--dry-run", ".", capsys=capsys)
    assert code == 0 and (tmp_path / "model.py").read_text() == before
    assert out.splitlines()[:2] == ["--- a/model.py", "+++ b/model.py"]
    assert "-from lightning.pytorch import LightningModule\n+from trellis import Module\n" in out
    assert "-class M(LightningModule):\n+class M(Module):\n" in out
    assert "would change 1 of 1 Python files" in err  # the report stays out of the patch


def test_a_second_run_changes_nothing(tmp_path, capsys):
    write(tmp_path, PROGRAMS)
    port(str(tmp_path), capsys=capsys)
    ported = {path: path.read_bytes() for path in tmp_path.glob("*.py")}
    code, out, _ = port(str(tmp_path), capsys=capsys)
    assert code == 0 and "changed 0 of 3 Python files" in out
    assert {path: path.read_bytes() for path in tmp_path.glob("*.py")} == ported


PROJECT = {
    "pkg/__init__.py": "",
    "pkg/model.py": '''
        import lightning.pytorch as pl
        import torch


        class Model(pl.LightningModule):
            def __init__(self, lr: float = 0.1):
                super().__init__()
                self.save_hyperparameters()
                self.layer = torch.nn.Linear(4, 1)

            def training_step(self, batch, batch_idx):
                return self.layer(batch).pow(2).mean()

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
    ''',
    "pkg/data.py": '''
        import torch
        from lightning import LightningDataModule
        from torch.utils.data import DataLoader


        class Data(LightningDataModule):
            def __init__(self, samples: int = 16):
                super().__init__()
                self.samples = samples

            def train_dataloader(self):
                return DataLoader(torch.randn(self.samples, 4), batch_size=4)
    ''',
    "train.py": '''
        from lightning.pytorch import cli_lightning_logo
        from lightning.pytorch.cli import LightningCLI

        from pkg.data import Data
        from pkg.model import Model


        def main():
            cli = LightningCLI(Model, Data, run=False, save_config_kwargs={"overwrite": True})
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
            print("RESULT", type(cli).__name__, cli.trainer.global_step, cli.model.hparams.lr)


        if __name__ == "__main__":
            cli_lightning_logo()
            main()
        elif False:
            cli_lightning_logo()
    ''',
    "configs/run.yaml": '''
        trainer:
          callbacks:
            - class_path: lightning.pytorch.callbacks.EarlyStopping
    ''',
    "requirements.txt": "torch\nlightning>=2.0\n",
    "README.md": "Trained with `import lightning as L`.\n",
    ".venv/lib/site.py": "import lightning\n",
    "env/pyvenv.cfg": "home = /usr\n",
    "env/lib/other.py": "import pytorch_lightning\n",
}


@pytest.mark.slow
def test_a_package_tree_ports_and_its_cli_script_runs(tmp_path, capsys):
    write(tmp_path, PROJECT)
    untouched = {name: (tmp_path / name).read_bytes()
                 for name in ("configs/run.yaml", "requirements.txt", "README.md", ".venv/lib/site.py",
                              "env/lib/other.py")}
    os.chdir(tmp_path)
    code, out, _ = port(".", capsys=capsys)
    assert "changed 3 of 4 Python files" in out  # pkg/__init__.py has nothing to change
    assert {name: (tmp_path / name).read_bytes() for name in untouched} == untouched
    assert code == 1  # the config and the requirement need a hand
    assert "configs/run.yaml:3: Lightning class path in a config (not edited)" in out
    assert "requirements.txt:2: Lightning requirement (not edited): lightning>=2.0" in out
    train = (tmp_path / "train.py").read_text()
    assert "from trellis.cli import TrellisCLI" in train and "cli = TrellisCLI(Model, Data" in train
    assert "    # trellis port: removed cli_lightning_logo() (Lightning's logo banner)\n    main()" in train
    assert "elif False:\n    pass  # trellis port: removed cli_lightning_logo()" in train  # the block stays valid
    assert "class Data(DataModule):" in (tmp_path / "pkg" / "data.py").read_text()
    process = run_without_lightning(tmp_path / "train.py", "--trainer.max_epochs=1", "--trainer.logger=false",
                                    "--trainer.enable_progress_bar=false", "--model.lr=0.2")
    assert result_line(process) == ["TrellisCLI", "4", "0.2"]


def test_what_cannot_be_mapped_is_kept_and_listed_with_its_line(tmp_path, capsys):
    write(tmp_path, {
        "fabric.py": '''
            import lightning as L
            from lightning.fabric import Fabric
            from lightning.pytorch.loggers import CSVLogger, NeptuneLogger

            fabric = L.Fabric()
            trainer = L.Trainer(logger=CSVLogger("logs"))
        ''',
        "broken.py": "def broken(:\n    pass\n",
    })
    os.chdir(tmp_path)
    code, out, _ = port(".", capsys=capsys)
    assert code == 1
    assert "broken.py:1: not ported: Python cannot parse this file" in out
    assert "fabric.py:2: lightning.fabric.Fabric has no Trellis counterpart: Trellis has no Fabric" in out
    assert "fabric.py:3: lightning.pytorch.loggers.NeptuneLogger has no Trellis counterpart" in out
    assert "fabric.py:5: lightning.fabric.Fabric has no Trellis counterpart" in out
    ported = (tmp_path / "fabric.py").read_text()
    assert ported.startswith("import trellis\nimport lightning as L\n")  # L stays for L.Fabric
    assert "from trellis_csv import CSVLogger\nfrom lightning.pytorch.loggers import NeptuneLogger\n" in ported
    assert "trainer = trellis.Trainer(logger=CSVLogger(" in ported
    assert (tmp_path / "broken.py").read_text() == "def broken(:\n    pass\n"


def test_names_that_would_clash_keep_their_lightning_spelling():
    ported, findings = port_source(
        "from torch.nn import Module\nfrom lightning.pytorch import LightningModule\n\n"
        "class Net(LightningModule):\n    layer: Module\n"
    )
    assert findings == []
    assert "from trellis import Module as LightningModule\n" in ported and "class Net(LightningModule):" in ported


def test_locals_named_like_a_lightning_module_are_left_alone():
    ported, _ = port_source(
        "from lightning.pytorch import Trainer, callbacks\n\n"
        "def build(callbacks):\n    return Trainer(callbacks=callbacks)\n\n"
        "stopper = callbacks.EarlyStopping(monitor='val_loss')\n"
    )
    assert "def build(callbacks):\n    return Trainer(callbacks=callbacks)" in ported
    assert "stopper = trellis.callbacks.EarlyStopping(monitor='val_loss')" in ported
    assert ported.startswith("from trellis import Trainer\nimport trellis.callbacks\n")


def test_renamed_imports_keep_the_users_alias_and_line_endings():
    ported, _ = port_source("from pytorch_lightning import LightningModule as LM, Trainer as T\r\n"
                            "from lightning.pytorch.loggers import MLFlowLogger\r\nlogger = MLFlowLogger()\r\n")
    assert ported == ("from trellis import Module as LM, Trainer as T\r\n"
                      "from trellis_mlflow import MLflowLogger\r\nlogger = MLflowLogger()\r\n")


def test_a_missing_path_is_an_error(tmp_path, capsys):
    code, _, err = port(str(tmp_path / "nowhere"), capsys=capsys)
    assert code == 2 and "no such file or directory" in err
