"""strategy="ddp" with real gloo processes: launch, parity with hand-written DDP, faults, attach to torchrun."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).parent / "scripts"
TRAIN = SCRIPTS / "ddp_regression.py"
sys.path.insert(0, str(SCRIPTS))
from trellis.testing.processes import LAUNCHER_VARIABLES, free_port, kill_group, run


def group_is_empty(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return True
    return False


def train(out: Path, *options: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return run([sys.executable, str(TRAIN), "--out", str(out), *options], timeout=timeout)


def reports(out: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(out.parent.glob(f"{out.name}.rank*.json"))]



def same_weights(first: Path, second: Path) -> bool:
    a, b = torch.load(first), torch.load(second)
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "weights.pt"
    result = train(out)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def handwritten_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("handwritten") / "weights.pt"
    result = run([sys.executable, str(SCRIPTS / "handwritten_ddp.py"), str(out), "2", str(free_port())])
    assert result.returncode == 0, result.stderr
    return out


def test_ddp_runs_two_processes_that_split_the_data_and_sync_metrics(ddp_run: Path) -> None:
    rank0, rank1 = reports(ddp_run)
    assert (rank0["rank"], rank1["rank"]) == (0, 1)
    assert rank0["pid"] != rank1["pid"]
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["seen"] == rank1["seen"] == 64  # half of 64 samples, for 2 epochs
    assert rank0["gathered"] == rank1["gathered"] == [0, 1]
    assert rank0["train_loss"] == rank1["train_loss"]  # sync_dist=True averaged it over both ranks
    assert rank0["global_step"] == 16


def test_ddp_weights_are_bit_identical_to_handwritten_distributed_data_parallel(
    ddp_run: Path, handwritten_weights: Path
) -> None:
    assert same_weights(ddp_run, handwritten_weights)


@pytest.mark.parametrize("failing_rank", [1, 0])
def test_a_failing_rank_stops_every_rank_promptly_with_its_traceback(tmp_path: Path, failing_rank: int) -> None:
    out = tmp_path / "weights.pt"
    command = [sys.executable, str(TRAIN), "--out", str(out), "--fail-rank", str(failing_rank)]
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, env={k: v for k, v in os.environ.items()
                                                            if k not in LAUNCHER_VARIABLES})
    try:
        _, stderr = process.communicate(timeout=60)
        elapsed = time.monotonic() - started
        time.sleep(0.5)
        survivors = not group_is_empty(process.pid)
    finally:
        kill_group(process.pid)
    assert process.returncode != 0
    assert f"ValueError: deliberate failure on rank {failing_rank}" in stderr
    assert "Traceback" in stderr
    assert elapsed < 45
    assert not survivors, "a rank outlived the failure"
    assert not out.exists()


def test_a_rendezvous_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as occupant:
        occupant.bind(("127.0.0.1", 0))
        occupant.listen()
        port = occupant.getsockname()[1]
        result = run([sys.executable, str(TRAIN), "--out", str(tmp_path / "w.pt")], timeout=60,
                     MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    assert result.returncode != 0
    assert f"MASTER_PORT={port} on 127.0.0.1 is already in use" in result.stderr
    assert "set MASTER_PORT to a free port" in result.stderr


def test_the_collective_timeout_ends_a_wait_for_a_rank_that_never_comes() -> None:
    started = time.monotonic()
    result = run([sys.executable, str(SCRIPTS / "collective_timeout.py"), "3"], timeout=90)
    assert result.returncode != 0
    assert "timed out" in result.stderr.lower() or "timeout" in result.stderr.lower(), result.stderr[-2000:]
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("strategy", ["ddp_spawn", "ddp_notebook"])
def test_spawned_ranks_train_like_ddp_and_hand_back_the_weights(
    tmp_path: Path, strategy: str, handwritten_weights: Path
) -> None:
    out = tmp_path / "weights.pt"
    result = train(out, "--strategy", strategy)
    assert result.returncode == 0, result.stderr
    assert same_weights(out, handwritten_weights)
    (main,) = reports(out)  # the launching process only waits; it got rank 0's progress back
    assert main["global_step"] == 16


def test_a_failing_spawned_rank_raises_in_the_launching_process_with_its_traceback(tmp_path: Path) -> None:
    result = train(tmp_path / "weights.pt", "--strategy", "ddp_notebook", "--fail-rank", "1", timeout=60)
    assert result.returncode != 0
    assert "RankFailedError: rank 1 of 2 failed" in result.stderr
    assert "ValueError: deliberate failure on rank 1" in result.stderr


def test_two_nodes_started_by_torchrun_attach_and_match_handwritten_ddp(
    tmp_path: Path, handwritten_weights: Path
) -> None:
    port = free_port()
    out = tmp_path / "weights.pt"
    nodes = []
    environment = {key: value for key, value in os.environ.items() if key not in LAUNCHER_VARIABLES}
    for node_rank in (0, 1):
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
                   f"--node-rank={node_rank}", "--master-addr=127.0.0.1", f"--master-port={port}",
                   str(TRAIN), "--out", str(out), "--devices", "1", "--num-nodes", "2"]
        nodes.append(subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, start_new_session=True))
    try:
        outputs = [node.communicate(timeout=120) for node in nodes]
    finally:
        for node in nodes:
            kill_group(node.pid)
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][1][-3000:] + outputs[1][1][-3000:]
    assert [report["rank"] for report in reports(out)] == [0, 1]
    assert same_weights(out, handwritten_weights)
