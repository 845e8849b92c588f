"""seed_everything as Lightning's (seed from the environment, bounds, returned seed) and the rank that
lightning_utilities' rank_zero_only needs, set by `import trellis` as `import lightning` sets it."""

from __future__ import annotations

import json
import os
import random

import pytest
import torch

from support import run_python
from trellis.utilities import seed_everything


@pytest.fixture
def no_seed(monkeypatch):
    monkeypatch.delenv("TRELLIS_GLOBAL_SEED", raising=False)
    monkeypatch.delenv("TRELLIS_SEED_WORKERS", raising=False)
    return monkeypatch


def test_the_seed_is_returned_exported_and_announced(no_seed, capsys):
    assert seed_everything(42, workers=True) == 42
    state = (random.random(), torch.rand(2))
    assert capsys.readouterr().err == "Seed set to 42\n"
    assert (os.environ["TRELLIS_GLOBAL_SEED"], os.environ["TRELLIS_SEED_WORKERS"]) == ("42", "1")
    assert seed_everything(42.7, verbose=False) == 42  # numbers are taken as ints
    assert (random.random(), torch.rand(2))[0] == state[0] and capsys.readouterr().err == ""


def test_without_a_seed_the_environment_s_is_taken_else_zero_with_a_warning(no_seed):
    no_seed.setenv("TRELLIS_GLOBAL_SEED", "123")
    assert seed_everything() == 123
    no_seed.delenv("TRELLIS_GLOBAL_SEED")
    with pytest.warns(UserWarning, match="found no seed"):
        assert seed_everything() == 0
    no_seed.setenv("TRELLIS_GLOBAL_SEED", "abc")
    with pytest.raises(ValueError, match="TRELLIS_GLOBAL_SEED='abc' is not an integer"):
        seed_everything()


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_seeds_outside_numpy_s_range_are_refused(no_seed, seed):
    with pytest.raises(ValueError, match=r"\[0, 4294967295\]"):
        seed_everything(seed)


REPORT_RANK = """
    import json
    {first}
    {second}
    from lightning_utilities.core.rank_zero import rank_zero_only

    @rank_zero_only
    def only_on_zero():
        return "ran"

    print(json.dumps({{"rank": rank_zero_only.rank, "result": only_on_zero()}}))
"""


@pytest.mark.parametrize("order", [("import trellis", "import lightning_utilities.core.rank_zero"),
                                   ("import lightning_utilities.core.rank_zero", "import trellis")])
@pytest.mark.parametrize("rank", ["0", "1"])
def test_importing_trellis_sets_the_rank_lightning_utilities_needs(order, rank):
    code = REPORT_RANK.format(first=order[0], second=order[1])
    result = run_python(code, env={"RANK": rank})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"rank": int(rank), "result": "ran" if rank == "0" else None}


def test_importing_trellis_does_not_import_lightning_utilities():
    result = run_python("import sys, trellis; print('lightning_utilities' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
