"""The kit's kill check: real writer processes killed mid-save; it passes atomic IOs that clean up after killed
saves and fails, saying what to fix, the ones that tear files or leave temporaries behind."""

from __future__ import annotations

import pytest

from support import make_distribution, run_python
from trellis.testing import checks_for

#: checkpoint IOs a careless third party might write.
BROKEN_IOS = """
import os, uuid, torch
from trellis.plugin import CheckpointIO

TRELLIS_PLUGIN_API = 1


class InPlace(CheckpointIO):
    \"\"\"torch.save straight into the target: a kill mid-write leaves a torn file.\"\"\"

    name = "in_place"

    def save_checkpoint(self, checkpoint, path):
        os.makedirs(os.path.dirname(os.fspath(path)), exist_ok=True)
        torch.save(checkpoint, path)

    def load_checkpoint(self, path, map_location="cpu", weights_only=True):
        return torch.load(path, map_location=map_location, weights_only=weights_only)

    def remove_checkpoint(self, path):
        os.unlink(path)

    def exists(self, path):
        return os.path.exists(path)


class Littering(InPlace):
    \"\"\"Atomic, but what a killed save wrote stays forever.\"\"\"

    name = "littering"

    def save_checkpoint(self, checkpoint, path):
        os.makedirs(os.path.dirname(os.fspath(path)), exist_ok=True)
        temporary = f"{path}.{uuid.uuid4().hex}.partial"
        torch.save(checkpoint, temporary)
        os.replace(temporary, path)
"""

RUN_KILL_CHECK = """
import sys, tempfile, pathlib
from trellis.testing import ConformanceFailure, Subject, Target
from trellis.testing.checkpoint_io_checks import check_kill_mid_save
with tempfile.TemporaryDirectory() as directory:
    try:
        check_kill_mid_save(Subject(Target.parse(sys.argv[1])), pathlib.Path(directory))
    except ConformanceFailure as failure:
        print("FAILED", failure)
    else:
        print("PASSED")
"""


def test_the_kill_check_is_part_of_the_checkpoint_io_contract():
    assert "kill_mid_save" in [check.id for check in checks_for("checkpoint_io")]


@pytest.mark.parametrize(("plugin", "complaint"), [
    ("in_place", "load_checkpoint raised"),
    ("littering", "remove what killed saves left"),
])
def test_an_io_that_tears_files_or_leaves_temporaries_fails_with_what_to_fix(tmp_path, plugin, complaint):
    make_distribution(tmp_path, "acme-checkpoints", {"trellis.checkpoint_io": {
        "in_place": "acme_checkpoints:InPlace", "littering": "acme_checkpoints:Littering"}},
        {"acme_checkpoints.py": BROKEN_IOS})
    done = run_python(RUN_KILL_CHECK.replace("sys.argv[1]", repr(f"checkpoint_io:{plugin}")), extra_path=tmp_path,
                      timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("FAILED") and complaint in done.stdout, done.stdout
