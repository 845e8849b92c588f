"""Step time of trellis.Trainer against the plain PyTorch loop, training a small GPT on one GPU.

    python bench/gpu_step.py                     # cuda, bf16-mixed, GPT 6x512, seq 256, batch 32
    python bench/gpu_step.py --device cpu --layers 1 --width 64 --sequence 32 --batch 4 --steps 5 --warmup 2

Both variants train the same model on the same pinned batches with AdamW; each trial times `--steps`
steps after `--warmup` steps (one synchronize at each end, start-up excluded). Trials alternate between
the variants; the figure is the median per step and the ratio trellis / plain. The last line starts with
FIGURE: for scripts/gpu-check.sh.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
import gpu_model  # noqa: E402
import trellis  # noqa: E402
from gpu_model import GPT, Shape  # noqa: E402


def plain_loop(shape: Shape, device: torch.device, precision: str, warmup: int, steps: int) -> float:
    """Seconds for `steps` steps of the hand-written loop, after `warmup` steps."""
    model = GPT(shape).to(device)
    optimizer = gpu_model.make_optimizer(model)
    batches = gpu_model.loader(gpu_model.token_data(shape, warmup + steps), shape, pin_memory=device.type == "cuda")
    started = 0.0
    for index, batch in enumerate(batches):
        if index == warmup:
            gpu_model.synchronize(device)
            started = time.perf_counter()
        batch = tuple(tensor.to(device, non_blocking=True) for tensor in batch)
        with gpu_model.autocast(device, precision):
            loss = gpu_model.next_token_loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    gpu_model.synchronize(device)
    return time.perf_counter() - started


class GPTModule(trellis.Module):
    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.model = GPT(shape)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return gpu_model.next_token_loss(self.model, batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return gpu_model.make_optimizer(self.model)


class WindowTimer(trellis.Callback):
    """Seconds from the start of batch `warmup` to the end of training, synchronized at both ends."""

    def __init__(self, device: torch.device, warmup: int) -> None:
        self.device, self.warmup = device, warmup
        self.started = self.seconds = 0.0

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx == self.warmup:
            gpu_model.synchronize(self.device)
            self.started = time.perf_counter()

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        gpu_model.synchronize(self.device)
        self.seconds = time.perf_counter() - self.started


def trellis_fit(shape: Shape, device: torch.device, precision: str, warmup: int, steps: int, root: str) -> float:
    timer = WindowTimer(device, warmup)
    trainer = trellis.Trainer(accelerator=device.type, devices=1, precision=precision, max_steps=warmup + steps,
                              logger=False, enable_checkpointing=False, enable_progress_bar=False,
                              enable_model_summary=False, callbacks=[timer], default_root_dir=root)
    data = gpu_model.token_data(shape, warmup + steps)
    trainer.fit(GPTModule(shape), gpu_model.loader(data, shape, pin_memory=False))
    return timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="bf16-mixed", choices=["bf16-mixed", "32-true"])
    parser.add_argument("--warmup", type=int, default=15)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--trials", type=int, default=3)
    gpu_model.add_shape_arguments(parser)
    arguments = parser.parse_args()
    shape, device = gpu_model.shape_from(arguments), torch.device(arguments.device, 0)
    gpu_model.require_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    root = tempfile.mkdtemp(prefix="trellis-gpu-step-")
    plain: list[float] = []
    ours: list[float] = []
    for _ in range(arguments.trials):
        plain.append(plain_loop(shape, device, arguments.precision, arguments.warmup, arguments.steps)
                     / arguments.steps)
        ours.append(trellis_fit(shape, device, arguments.precision, arguments.warmup, arguments.steps, root)
                    / arguments.steps)
    plain_ms, ours_ms = statistics.median(plain) * 1e3, statistics.median(ours) * 1e3
    tokens = shape.batch * shape.sequence
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{shape.describe()}, {arguments.precision}, AdamW, on {where}; {arguments.steps} steps after "
          f"{arguments.warmup} warm-up, median of {arguments.trials} alternating trials")
    print(f"plain loop      {plain_ms:8.3f} ms/step  ({tokens / plain_ms * 1e3:,.0f} tokens/s)")
    print(f"trellis.Trainer {ours_ms:8.3f} ms/step  ({tokens / ours_ms * 1e3:,.0f} tokens/s)")
    print(f"FIGURE: trellis/plain {ours_ms / plain_ms:.3f} ({ours_ms:.2f} vs {plain_ms:.2f} ms/step, "
          f"GPT {shape.layers}x{shape.width} {arguments.precision})")


if __name__ == "__main__":
    main()
