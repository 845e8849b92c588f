"""strategy="ddp" against hand-written DDP, training a small GPT on every visible GPU over nccl.

    python bench/gpu_ddp.py                    # every visible GPU, bf16-mixed, GPT 6x512, seq 256, batch 32
    python bench/gpu_ddp.py --device cpu --processes 2 --layers 1 --width 64 --sequence 32 --batch 4 --steps 5

The hand-written loop is the textbook one (init_process_group, DistributedDataParallel, DistributedSampler,
autocast, backward, step); Trellis starts its own ranks. Each reports rank 0's seconds for `--steps` steps
after `--warmup` steps, synchronized at both ends (start-up excluded). One run of each; the last line starts
with FIGURE: for scripts/gpu-check.sh.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
import gpu_model  # noqa: E402
from gpu_model import GPT, Shape  # noqa: E402

TIMEOUT_S = 300


def handwritten_rank(rank: int, arguments: argparse.Namespace, port: int) -> None:
    import torch.distributed as dist
    from torch.utils.data.distributed import DistributedSampler

    shape, world = gpu_model.shape_from(arguments), arguments.processes
    device = torch.device(arguments.device, rank if arguments.device == "cuda" else 0)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    model = torch.nn.parallel.DistributedDataParallel(
        GPT(shape).to(device), device_ids=[device.index] if device.type == "cuda" else None
    )
    optimizer = gpu_model.make_optimizer(model)
    dataset = gpu_model.token_data(shape, (arguments.warmup + arguments.steps) * world)
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False)
    started = 0.0
    for index, batch in enumerate(gpu_model.loader(dataset, shape, pin_memory=device.type == "cuda", sampler=sampler)):
        if index == arguments.warmup:
            gpu_model.synchronize(device)
            started = time.perf_counter()
        batch = tuple(tensor.to(device, non_blocking=True) for tensor in batch)
        with gpu_model.autocast(device, arguments.precision):
            loss = gpu_model.next_token_loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    gpu_model.synchronize(device)
    if rank == 0:
        print(f"SECONDS {time.perf_counter() - started}", flush=True)
    dist.destroy_process_group()


def handwritten(arguments: argparse.Namespace) -> None:
    import torch.multiprocessing as mp

    from trellis.testing.processes import free_port

    mp.start_processes(handwritten_rank, args=(arguments, free_port()), nprocs=arguments.processes,
                       start_method="spawn")


def trellis_ddp(arguments: argparse.Namespace) -> None:
    import trellis

    class GPTModule(trellis.Module):
        def __init__(self, shape: Shape) -> None:
            super().__init__()
            self.model = GPT(shape)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return gpu_model.next_token_loss(self.model, batch)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return gpu_model.make_optimizer(self.model)

    class WindowTimer(trellis.Callback):
        def __init__(self) -> None:
            self.started = 0.0

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            if batch_idx == arguments.warmup:
                gpu_model.synchronize(trainer.strategy.root_device)
                self.started = time.perf_counter()

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            gpu_model.synchronize(trainer.strategy.root_device)
            if trainer.global_rank == 0:
                print(f"SECONDS {time.perf_counter() - self.started}", flush=True)

    shape, world = gpu_model.shape_from(arguments), arguments.processes
    trainer = trellis.Trainer(accelerator=arguments.device, strategy="ddp", devices=world,
                              precision=arguments.precision, max_steps=arguments.warmup + arguments.steps,
                              logger=False, enable_checkpointing=False, enable_progress_bar=False,
                              enable_model_summary=False, callbacks=[WindowTimer()],
                              default_root_dir=tempfile.gettempdir())
    dataset = gpu_model.token_data(shape, (arguments.warmup + arguments.steps) * world)
    trainer.fit(GPTModule(shape), gpu_model.loader(dataset, shape, pin_memory=False))


def seconds(variant: str, argv: list[str]) -> float:
    """Run one variant in processes of its own; rank 0's timed seconds."""
    from trellis.testing.processes import run

    result = run([sys.executable, __file__, "--variant", variant, *argv], timeout=TIMEOUT_S)
    lines = [line for line in result.stdout.splitlines() if line.startswith("SECONDS ")]
    if result.returncode != 0 or not lines:
        raise SystemExit(f"the {variant} run failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return float(lines[-1].split()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--processes", type=int, default=0, help="default: every visible GPU (2 on cpu)")
    parser.add_argument("--precision", default="bf16-mixed", choices=["bf16-mixed", "32-true"])
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--variant", choices=["handwritten", "trellis"], help=argparse.SUPPRESS)
    gpu_model.add_shape_arguments(parser)
    arguments = parser.parse_args()
    gpu_model.require_device(torch.device(arguments.device))
    if arguments.processes < 1:
        arguments.processes = torch.cuda.device_count() if arguments.device == "cuda" else 2
    if arguments.variant == "handwritten":
        return handwritten(arguments)
    if arguments.variant == "trellis":
        return trellis_ddp(arguments)
    argv = list(sys.argv[1:])
    if "--processes" not in argv:
        argv += ["--processes", str(arguments.processes)]
    hand, ours = seconds("handwritten", argv), seconds("trellis", argv)
    shape, steps = gpu_model.shape_from(arguments), arguments.steps
    backend = "nccl" if arguments.device == "cuda" else "gloo"
    print(f"{shape.describe()} per rank, {arguments.precision}, {arguments.processes} processes over {backend}; "
          f"{steps} steps after {arguments.warmup} warm-up, one run each")
    print(f"hand-written DDP   {hand / steps * 1e3:8.3f} ms/step")
    print(f"trellis ddp        {ours / steps * 1e3:8.3f} ms/step")
    print(f"FIGURE: trellis/hand-written {ours / hand:.3f} ({ours / steps * 1e3:.2f} vs {hand / steps * 1e3:.2f} "
          f"ms/step, {arguments.processes} x {backend})")


if __name__ == "__main__":
    main()
