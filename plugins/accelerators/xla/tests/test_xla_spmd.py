"""SPMD over 4 of XLA's CPU devices (CPU_NUM_DEVICES=4): one process drives every device.

SPMD mode belongs to a whole process, so each run is a process of its own (tests/spmd_fit.py). Runs are
cached for the module: the sharded-weights run is compared with one device, resumed, and loaded elsewhere.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch_xla", reason="torch_xla is not installed (the XLA venv of .ci/run has it)")

import torch  # noqa: E402

from trellis.testing.processes import run  # noqa: E402

SCRIPT = Path(__file__).with_name("spmd_fit.py")
#: the issue's bound for devices=4 against devices=1 on the same global batch (seen: under 1e-6).
LOSS_TOLERANCE = 1e-5
#: seconds per run: a fresh XLA runtime compiles every graph, slowly on a loaded 2-core machine.
RUN_TIMEOUT = 600

Fit = Callable[..., dict[str, Any]]


def split_over_4(spec: str) -> bool:
    """Whether an XLA sharding annotation ("{devices=[1,4]0,1,2,3}") splits a dimension over all 4 devices."""
    match = re.fullmatch(r"\{devices=\[([\d,]+)\]0,1,2,3\}", spec)
    return match is not None and 4 in [int(tiles) for tiles in match.group(1).split(",")]


@pytest.fixture(scope="module")
def fit(tmp_path_factory: pytest.TempPathFactory) -> Fit:
    """fit(name, visible_devices, **options): spmd_fit.py run once per name; what it saved, plus its "root".

    Options become the script's flags; `run` names the root directory (runs sharing it share last.ckpt);
    `killed=True` expects the run to die by SIGKILL.
    """
    base = tmp_path_factory.mktemp("spmd")
    results: dict[str, dict[str, Any]] = {}

    def launch(name: str, visible_devices: int, run_in: str | None = None, killed: bool = False,
               **options: Any) -> dict[str, Any]:
        if name not in results:
            root, out = base / (run_in or name), base / f"{name}.pt"
            flags = [f"--{key.replace('_', '-')}={value}" for key, value in options.items()]
            completed = run([sys.executable, str(SCRIPT), f"--out={out}", f"--root={root}", *flags],
                            timeout=RUN_TIMEOUT, PJRT_DEVICE="CPU", CPU_NUM_DEVICES=str(visible_devices))
            assert completed.returncode == (-9 if killed else 0), completed.stderr[-4000:]
            results[name] = {"root": root, "out": out, **({} if killed else torch.load(out))}
        return results[name]

    return launch


def one_device(fit: Fit) -> dict[str, Any]:
    return fit("one", 1, devices=1)


def four_devices(fit: Fit) -> dict[str, Any]:
    return fit("four", 4, devices=4)


def sharded_weights(fit: Fit) -> dict[str, Any]:
    """strategy="xla_fsdp" over 4 devices, writing last.ckpt every 5 steps (the last at step 20)."""
    return fit("sharded", 4, devices=4, strategy="xla_fsdp", checkpoint_every=5)


def test_four_devices_give_the_losses_of_one_device_on_the_same_global_batch(fit) -> None:
    one, four, sharded = one_device(fit), four_devices(fit), sharded_weights(fit)
    assert one["devices"] == [0] and four["devices"] == sharded["devices"] == [0, 1, 2, 3]
    assert one["batch_sharding"] == ["", ""]
    assert all(map(split_over_4, four["batch_sharding"] + sharded["batch_sharding"]))
    assert len(one["losses"]) == 24 and one["losses"][-1] < one["losses"][0] / 4  # 3 epochs of 8 batches
    for on_four in (four, sharded):
        for key in ("losses", "val_losses"):
            torch.testing.assert_close(torch.tensor(on_four[key]), torch.tensor(one[key]), rtol=0, atol=LOSS_TOLERANCE)
    print("\nstep  1 device    4 devices   4, xla_fsdp")
    for step, losses in enumerate(zip(one["losses"], four["losses"], sharded["losses"]), start=1):
        print(f"{step:4d}  " + "  ".join(f"{loss:.8f}" for loss in losses))


def test_data_parallel_replicates_weights_and_xla_fsdp_splits_them_with_the_optimizer_state(fit) -> None:
    four, sharded = four_devices(fit), sharded_weights(fit)
    assert set(four["weight_sharding"].values()) == {"{replicated}"}
    assert all(map(split_over_4, sharded["weight_sharding"].values()))
    assert len(sharded["optimizer_sharding"]) == 8  # Adam's two moments of 4 parameters
    assert all(map(split_over_4, sharded["optimizer_sharding"]))


def test_sharded_weights_killed_mid_epoch_resume_exactly(fit) -> None:
    """Weights end bit-identical, and so do the logged losses of a run checkpointing at the same steps.

    (ModelCheckpoint reads the logged metrics on the host, which on XLA runs that part of the step as its own
    graph: a checkpointed step's loss can differ in the last bit from the same step unchecked; weights never.)
    """
    reference = sharded_weights(fit)
    options = {"devices": 4, "strategy": "xla_fsdp", "checkpoint_every": 5, "run_in": "killed"}
    killed = fit("killed", 4, killed=True, kill_at_step=13, **options)  # last.ckpt holds step 10, in epoch 2
    resumed = fit("resumed", 4, resume=killed["root"] / "checkpoints" / "last.ckpt", **options)
    assert resumed["global_step"] == 24
    assert resumed["losses"] == reference["losses"][10:]
    for name, expected in reference["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], expected), f"{name} differs from the uninterrupted run"
    assert all(map(split_over_4, resumed["optimizer_sharding"]))  # the restored state is split again


def test_spmd_checkpoint_continues_on_cpu_without_torch_xla_and_on_one_device(fit) -> None:
    sharded = sharded_weights(fit)
    checkpoint = sharded["root"] / "checkpoints" / "last.ckpt"  # step 20, in epoch 3
    on_one = fit("continued-on-one", 1, devices=1, epochs=4, resume=checkpoint)
    on_cpu_out = sharded["root"].parent / "continued-on-cpu.pt"
    code = (
        "import runpy, sys, torch\n"
        "sys.modules['torch_xla'] = None\n"  # as on a machine without torch_xla
        "from trellis.checkpointing import load_checkpoint_file\n"
        "weights = load_checkpoint_file(sys.argv[1])['state_dict']\n"
        "full = {name: tensor.shape for name, tensor in torch.load(sys.argv[2])['state_dict'].items()}\n"
        "assert {name: tensor.shape for name, tensor in weights.items()} == full, 'not the full weights'\n"
        "sys.argv = [sys.argv[3], '--accelerator=cpu', '--epochs=4', f'--resume={sys.argv[1]}', *sys.argv[4:]]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    completed = run([sys.executable, "-c", code, str(checkpoint), str(sharded["out"]), str(SCRIPT),
                     f"--out={on_cpu_out}", f"--root={on_cpu_out.with_suffix('')}"], timeout=RUN_TIMEOUT,
                    PJRT_DEVICE="")
    assert completed.returncode == 0, completed.stderr[-4000:]
    on_cpu = torch.load(on_cpu_out)
    assert on_one["global_step"] == on_cpu["global_step"] == 32  # resumed at step 20, trained to the end of epoch 4
    for continued in (on_one, on_cpu):
        losses = torch.tensor(continued["losses"])
        assert len(losses) == 12
        # steps 21-24 are those of the sharded run itself: its weights, optimizer state and place in the epoch
        torch.testing.assert_close(losses[:4], torch.tensor(sharded["losses"][20:]), rtol=0, atol=LOSS_TOLERANCE)
    torch.testing.assert_close(torch.tensor(on_one["losses"]), torch.tensor(on_cpu["losses"]), rtol=0,
                               atol=LOSS_TOLERANCE)
