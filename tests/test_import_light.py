"""Importing trellis and fitting a default Trainer imports only what was chosen."""

from __future__ import annotations

import json
import pathlib

from support import run_python

HEAVY = ("deepspeed", "tensorboard", "mlflow", "wandb", "torch_xla")
KERNEL_DEFAULTS = {"trellis_cpu", "trellis_true", "trellis_torch"}


def test_import_and_default_fit_import_no_plugin_that_was_not_chosen(tmp_path):
    code = f"""
        import json, os, sys
        os.chdir({str(tmp_path)!r})
        import trellis
        after_import = sorted(name for name in sys.modules if name.startswith("trellis_"))
        sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r})
        from support import TinyRegressor, loader
        trainer = trellis.Trainer(accelerator="cpu", max_steps=3, enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(TinyRegressor(), loader())
        logger = type(trainer.logger).__module__
        print(json.dumps({{"after_import": after_import, "modules": sorted(sys.modules), "logger": logger}}))
    """
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["after_import"] == []
    # logger=True is TensorBoard where trellis-tensorboard is installed (it then imports tensorboard), else CSV.
    default_logger = report["logger"]
    assert default_logger in ("trellis_tensorboard", "trellis_csv")
    plugin_modules = {name.split(".")[0] for name in report["modules"] if name.startswith("trellis_")}
    assert plugin_modules == KERNEL_DEFAULTS | {default_logger}
    chosen_heavy = ("tensorboard",) if default_logger == "trellis_tensorboard" else ()
    loaded_heavy = {name.split(".")[0] for name in report["modules"] if name.split(".")[0] in HEAVY}
    assert loaded_heavy <= set(chosen_heavy)


def test_auto_accelerator_imports_only_accelerator_descriptors(tmp_path):
    code = f"""
        import json, sys
        import trellis
        trellis.Trainer(logger=False)
        print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in {HEAVY!r})))
    """
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
