"""`trellis plugins`: installed distributions, clashes, and with --check imports, availability and the exit status."""

from __future__ import annotations

import json

from discovery.plugin_sources import NPU_MODULE, RAISING_NPU_MODULE
from support import make_distribution, run_python

COMMAND = "import sys; from trellis.cli import main; sys.exit(main({arguments!r}))"


def _plugins(tmp_path, *arguments: str, env: dict[str, str] | None = None):
    return run_python(COMMAND.format(arguments=["plugins", *arguments]), tmp_path, env=env)


def _install_trouble(tmp_path) -> None:
    """A good accelerator, a rival claiming its name, a logger that fails to import, a crashing probe."""
    make_distribution(tmp_path, "acme-npu", {"trellis.accelerators": {"npu": "acme_npu:NPU"}},
                      {"acme_npu.py": NPU_MODULE})
    make_distribution(tmp_path, "other-npu", {"trellis.accelerators": {"npu": "other_npu:NPU"}},
                      {"other_npu.py": NPU_MODULE}, version="2.0")
    make_distribution(tmp_path, "broken-logger", {"trellis.loggers": {"brokenlog": "broken_logger:Logger"}},
                      {"broken_logger.py": "raise RuntimeError('bad install')\n"})
    make_distribution(tmp_path, "flaky-npu", {"trellis.accelerators": {"flaky": "flaky_npu:NPU"}},
                      {"flaky_npu.py": RAISING_NPU_MODULE})


def test_listing_shows_clashes_without_importing_anything_and_exits_zero(tmp_path):
    _install_trouble(tmp_path)
    result = _plugins(tmp_path, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["schema"], report["plugin_api"], report["checked"], report["ok"]) == (1, 1, False, False)
    records = {record["distribution"]: record for record in report["distributions"]}
    assert records["acme-npu"]["provides"] == {"accelerator": ["npu"]}
    assert records["broken-logger"]["plugins"][0]["error"] is None  # not imported without --check
    assert report["clashes"] == [{
        "role": "accelerator", "name": "npu", "resolved_to": None,
        "distributions": [{"distribution": "acme-npu", "version": "1.0", "entry_point": "acme_npu:NPU"},
                          {"distribution": "other-npu", "version": "2.0", "entry_point": "other_npu:NPU"}],
    }]
    text = _plugins(tmp_path)
    assert "clash: accelerator 'npu' is claimed by acme-npu 1.0, other-npu 2.0 (choosing it is an error" in text.stdout
    assert "bad install" not in text.stdout


def test_check_reports_errors_availability_reasons_and_device_counts_and_exits_one(tmp_path):
    _install_trouble(tmp_path)
    result = _plugins(tmp_path, "--json", "--check")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is False
    records = {record["distribution"]: record for record in report["distributions"]}
    plugins = {(record["distribution"], plugin["name"]): plugin
               for record in report["distributions"] for plugin in record["plugins"]}
    assert "bad install" in plugins["broken-logger", "brokenlog"]["error"]
    assert "driver exploded" in plugins["flaky-npu", "flaky"]["error"]
    assert "claimed by two distributions" in plugins["acme-npu", "npu"]["error"]
    cpu = plugins["trellis-cpu", "cpu"]
    assert cpu["available"] is True and cpu["device_count"] >= 1 and cpu["unavailable_reason"] is None
    cuda = plugins["trellis-cuda", "cuda"]  # this machine has no CUDA device
    assert cuda["available"] is False and cuda["unavailable_reason"] and cuda["device_count"] is None
    assert records["trellis-cpu"]["plugin_api"] == 1
    text = _plugins(tmp_path, "--check")
    assert text.returncode == 1
    assert f"cpu (available, {cpu['device_count']} device" in text.stdout
    assert f"cuda, gpu unavailable here: {cuda['unavailable_reason']}" in text.stdout
    assert "error: " in text.stdout and "bad install" in text.stdout


def test_check_passes_on_the_in_tree_plugins_alone(tmp_path):
    result = _plugins(tmp_path, "--check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "error:" not in result.stdout and "clash:" not in result.stdout


def test_a_well_known_name_claimed_twice_is_shown_resolved_to_its_own_distribution(tmp_path):
    make_distribution(tmp_path, "csv-hijack", {"trellis.loggers": {"csv": "csv_hijack:Hijack"}},
                      {"csv_hijack.py": "raise SystemExit('never imported')\n"})
    report = json.loads(_plugins(tmp_path, "--json").stdout)
    assert [(clash["name"], clash["resolved_to"]) for clash in report["clashes"]] == [("csv", "trellis-csv")]


def test_blocked_plugins_are_marked_and_a_mistyped_block_entry_is_flagged(tmp_path):
    make_distribution(tmp_path, "acme-npu", {"trellis.accelerators": {"npu": "acme_npu:NPU"}},
                      {"acme_npu.py": NPU_MODULE})
    result = _plugins(tmp_path, env={"TRELLIS_BLOCK_PLUGINS": "npu,tensorbord"})
    assert "accelerator: npu (blocked)" in result.stdout
    assert ("warning: TRELLIS_BLOCK_PLUGINS names 'tensorbord', which is no installed plugin or distribution, so it "
            "blocks nothing: did you mean 'tensorboard'?") in result.stdout
