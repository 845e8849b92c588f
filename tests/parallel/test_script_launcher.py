"""The script launcher re-runs the user's script for each further process; it needs one to re-run."""

from __future__ import annotations

import pytest

from trellis.errors import ConfigurationError


def test_re_running_needs_a_script(monkeypatch: pytest.MonkeyPatch) -> None:
    from trellis.parallel.script_launcher import script_command

    monkeypatch.setattr("sys.argv", ["-c"])
    monkeypatch.setattr("sys.modules", {**__import__("sys").modules, "__main__": type("M", (), {"__spec__": None})})
    with pytest.raises(ConfigurationError, match="ddp_notebook"):
        script_command()
