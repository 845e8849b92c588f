"""strategy="fsdp" (torch fully_shard) on two CPU processes over gloo."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from trellis.testing.processes import free_port, run

SCRIPTS = Path(__file__).parent / "scripts"
HANDWRITTEN = Path(__file__).parents[2] / "ddp" / "tests" / "scripts" / "handwritten_ddp.py"




def test_fsdp_trains_like_handwritten_ddp_and_checkpoints_full_weights(tmp_path: Path) -> None:
    fsdp, reference = tmp_path / "fsdp.pt", tmp_path / "ddp.pt"
    trained = run([sys.executable, str(SCRIPTS / "fsdp_regression.py"), "--out", str(fsdp)])
    assert trained.returncode == 0, trained.stderr[-3000:]
    handwritten = run([sys.executable, str(HANDWRITTEN), str(reference), "2", str(free_port())])
    assert handwritten.returncode == 0, handwritten.stderr[-3000:]
    sharded_result, ddp_result = torch.load(fsdp), torch.load(reference)
    assert sharded_result.keys() == ddp_result.keys()
    for key in ddp_result:
        torch.testing.assert_close(sharded_result[key], ddp_result[key], rtol=0, atol=1e-6)

    checkpoint = torch.load(str(fsdp) + ".ckpt", weights_only=False)
    network = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    network.load_state_dict({key.removeprefix("net."): value for key, value in checkpoint["state_dict"].items()})
    assert torch.equal(network[0].weight, sharded_result["0.weight"])
    assert checkpoint["global_step"] == 16


def test_layers_made_in_configure_model_are_never_whole_and_train(tmp_path: Path) -> None:
    import json

    out = tmp_path / "meta"
    trained = run([sys.executable, str(SCRIPTS / "fsdp_meta_init.py"), str(out)])
    assert trained.returncode == 0, trained.stderr[-3000:]
    reports = [json.loads((tmp_path / f"meta.rank{rank}.json").read_text()) for rank in (0, 1)]
    for report in reports:
        assert report["created_on_meta"]
        assert report["local_head_elements"] == report["head_elements"] // 2  # each rank holds half
        assert report["head_finite"] and report["last_loss"] < report["first_loss"] / 2
        assert report["stem_kept_through_materialisation"]  # __init__'s layers keep their values


def test_a_configure_model_layer_without_reset_parameters_is_refused_with_the_fix() -> None:
    import pytest

    from trellis.errors import ConfigurationError
    from trellis_fsdp.strategy import _created_on_meta

    class Scale(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.factor = torch.nn.Parameter(torch.ones(4))

    with torch.device("meta"):
        model = torch.nn.Sequential(torch.nn.Linear(4, 4), Scale())
    with pytest.raises(ConfigurationError, match=r"define Scale.reset_parameters\(\)"):
        _created_on_meta(model)
