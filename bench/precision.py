"""Step time of every precision mode against 32-true, on one model, through trellis.Trainer.

    python bench/precision.py                      # CPU, every mode the machine can run
    python bench/precision.py --accelerator cuda   # GPU figures (fp8 too, where available)

Each mode trains the same MLP on the same synthetic batches; the figure is the median wall time of
a training step (forward, backward, optimizer step) after warm-up steps. One run, no repetitions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

import trellis
from trellis.errors import ConfigurationError

MODES = ("32-true", "64-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "transformer-engine")


class MLP(trellis.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Linear(width, width), torch.nn.ReLU(),
            torch.nn.Linear(width, 16),
        )

    def training_step(self, batch, batch_idx):
        inputs, targets = batch
        return torch.nn.functional.cross_entropy(self.net(inputs).float(), targets)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3, momentum=0.9)


class StepTimer:
    """Wall time from each training batch's start to its end (the optimizer step included)."""

    def __init__(self, synchronize) -> None:
        self.synchronize = synchronize
        self.durations: list[float] = []
        self._started = 0.0

    def on_train_batch_start(self) -> None:
        self.synchronize()
        self._started = time.perf_counter()

    def on_train_batch_end(self) -> None:
        self.synchronize()
        self.durations.append(time.perf_counter() - self._started)


def step_time(mode: str, args: argparse.Namespace) -> float:
    """Median seconds per training step of `mode`, after `args.warmup` steps."""
    torch.manual_seed(0)
    steps = args.warmup + args.steps
    data = TensorDataset(torch.randn(steps * args.batch_size, args.width),
                         torch.randint(0, 16, (steps * args.batch_size,)))
    synchronize = torch.cuda.synchronize if args.accelerator == "cuda" else (lambda: None)
    timer = StepTimer(synchronize)
    trainer = trellis.Trainer(accelerator=args.accelerator, devices=1, precision=mode, max_epochs=1, logger=False,
                              enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                              plugins=[timer], default_root_dir=args.root)
    trainer.fit(MLP(args.width), DataLoader(data, batch_size=args.batch_size))
    return statistics.median(timer.durations[args.warmup:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--modes", nargs="+", default=list(MODES))
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--root", default="/tmp/trellis-bench-precision")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, accelerator={args.accelerator}, {threads} threads, MLP {args.width}x"
          f"{args.width}x{args.width}x16, batch {args.batch_size}, median of {args.steps} steps")
    results: dict[str, dict[str, float] | str] = {}
    baseline = None
    for mode in args.modes:
        try:
            seconds = step_time(mode, args)
        except ConfigurationError as error:
            results[mode] = f"unavailable: {error}"
            print(f"{mode:>20}  unavailable: {error}")
            continue
        baseline = baseline if baseline is not None else (seconds if mode == "32-true" else None)
        ratio = seconds / baseline if baseline else float("nan")
        results[mode] = {"step_ms": seconds * 1e3, "ratio_to_32_true": ratio}
        print(f"{mode:>20}  {seconds * 1e3:9.2f} ms/step  x{ratio:.2f} of 32-true")
    if args.json:
        with open(args.json, "w") as stream:
            json.dump({"accelerator": args.accelerator, "threads": threads, "results": results}, stream, indent=2)


if __name__ == "__main__":
    main()
