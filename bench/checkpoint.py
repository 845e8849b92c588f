"""Checkpoint save and load time of trellis-torch against bare torch.save/torch.load, and the training
loop's blocked time per save with asynchronous saving against synchronous saving.

    python bench/checkpoint.py [--width 2048] [--layers 2] [--dir /tmp]

Part 1: one state (an MLP's weights plus its Adam state), saved and loaded once by each variant after one
warm-up round; the bare torch.save has no fsync, so a torch.save + fsync row shows what durability costs.
Part 2: trellis.Trainer trains the same MLP with ModelCheckpoint(every_n_train_steps=...) and
TorchCheckpointIO(async_save=False/True); a save's blocked time is how long the loop waits between the end
of the saving step's batch and the next batch, minus that wait on steps without a save (build_checkpoint,
the snapshot and any wait for the previous write; with async saving the background writer also competes
for the CPU cores with training, which shows in fit time, not here). The final wait is what teardown spent
finishing the last write. One run, no repetitions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, TensorDataset

import trellis
from trellis.callbacks import ModelCheckpoint
from trellis_torch import TorchCheckpointIO


class MLP(trellis.Module):
    def __init__(self, width: int, layers: int) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(*(torch.nn.Linear(width, width) for _ in range(layers)))

    def training_step(self, batch, batch_idx):
        inputs, targets = batch
        return torch.nn.functional.mse_loss(self.net(inputs), targets)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-4)


def training_state(width: int, layers: int) -> dict:
    """Weights and Adam state after one step: what a checkpoint mostly holds."""
    model = MLP(width, layers)
    optimizer = model.configure_optimizers()
    model.training_step((torch.randn(8, width), torch.randn(8, width)), 0).backward()
    optimizer.step()
    return {"state_dict": model.state_dict(), "optimizer_states": [optimizer.state_dict()], "global_step": 1}


def seconds(action: Callable[[], object], runs: int = 5) -> float:
    """Median time of `runs` calls after a warm-up (page cache, allocator, first-call costs)."""
    action()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def torch_save_fsync(state: dict, path: str) -> None:
    with open(path, "wb") as file:
        torch.save(state, file)
        file.flush()
        os.fsync(file.fileno())


def save_and_load(state: dict, directory: str) -> list[tuple[str, float]]:
    io = TorchCheckpointIO()
    bare, synced, ours = (os.path.join(directory, name) for name in ("bare.pt", "fsync.pt", "trellis.ckpt"))
    return [
        ("torch.save (no fsync)", seconds(lambda: torch.save(state, bare))),
        ("torch.save + fsync", seconds(lambda: torch_save_fsync(state, synced))),
        ("TorchCheckpointIO.save", seconds(lambda: io.save_checkpoint(state, ours))),
        ("torch.load(weights_only)", seconds(lambda: torch.load(bare, weights_only=True))),
        ("TorchCheckpointIO.load", seconds(lambda: io.load_checkpoint(ours))),
    ]


class StepClock:
    """When each training batch's end hooks start and when the loop moves on (the next batch or the end).

    Registered before ModelCheckpoint (which runs last), so the gap between the two is the checkpoint's.
    """

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.resumes: list[float] = []

    def on_train_batch_start(self) -> None:
        if self.ends:
            self.resumes.append(time.perf_counter())

    def on_train_batch_end(self) -> None:
        self.ends.append(time.perf_counter())

    def on_train_end(self) -> None:
        self.resumes.append(time.perf_counter())


def blocked_per_save(args: argparse.Namespace, async_save: bool, directory: str) -> dict[str, float]:
    torch.manual_seed(0)
    steps = args.steps
    data = TensorDataset(torch.randn(steps * 32, args.width), torch.randn(steps * 32, args.width))
    clock = StepClock()
    trainer = trellis.Trainer(
        accelerator="cpu", max_steps=steps, logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=directory, plugins=[TorchCheckpointIO(async_save=async_save), clock],
        callbacks=[ModelCheckpoint(dirpath=directory, save_top_k=1, every_n_train_steps=args.every)],
    )
    started = time.perf_counter()
    trainer.fit(MLP(args.width, args.layers), DataLoader(data, batch_size=32))
    total = time.perf_counter() - started
    gaps = [resume - end for end, resume in zip(clock.ends, clock.resumes)]
    saving = {step for step in range(steps) if (step + 1) % args.every == 0}
    plain = statistics.median(gap for step, gap in enumerate(gaps) if step not in saving)
    blocked = [gaps[step] - plain for step in sorted(saving)]
    return {"blocked": statistics.mean(blocked), "worst": max(blocked), "saves": len(blocked), "fit": total,
            "teardown": total - (clock.resumes[-1] - started)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--dir", default=None, help="where to write (default: the system temporary directory)")
    args = parser.parse_args()

    state = training_state(args.width, args.layers)
    weights = sum(t.numel() * t.element_size() for t in state["state_dict"].values())
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        rows = save_and_load(state, directory)
        size = os.path.getsize(os.path.join(directory, "trellis.ckpt"))
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; MLP {args.layers} x Linear({args.width}, "
              f"{args.width}) + Adam: weights {weights / 2**20:.0f} MiB, file {size / 2**20:.0f} MiB, in {directory}")
        print(f"\n{'operation':<26}{'seconds':>9}{'ratio':>8}")
        baselines = {"save": rows[0][1], "load": rows[3][1]}
        for name, value in rows:
            baseline = baselines["load" if "load" in name else "save"]
            print(f"{name:<26}{value:>9.3f}{value / baseline:>8.2f}")

        figures = {mode: blocked_per_save(args, mode == "async", os.path.join(directory, mode))
                   for mode in ("sync", "async")}
    print(f"\nTrainer, {args.steps} steps, ModelCheckpoint(every_n_train_steps={args.every}, save_top_k=1):")
    print(f"{'saving':<8}{'blocked ms/save':>17}{'worst ms':>10}{'saves':>7}{'final wait ms':>15}{'fit s':>8}")
    for mode, figure in figures.items():
        print(f"{mode:<8}{figure['blocked'] * 1e3:>17.1f}{figure['worst'] * 1e3:>10.1f}{figure['saves']:>7}"
              f"{figure['teardown'] * 1e3:>15.1f}{figure['fit']:>8.2f}")
    ratio = figures["async"]["blocked"] / figures["sync"]["blocked"]
    print(f"async blocks the loop {ratio:.2f}x as long per save as sync")


if __name__ == "__main__":
    main()
