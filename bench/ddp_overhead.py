"""DDP overhead: Trellis strategy="ddp" on two CPU processes against the hand-written DDP loop (one run each).

Both train the same MLP for the same steps over gloo; each reports rank 0's time from joining the process
group to the end of training (Trellis: the whole trainer.fit). Prints both times, per-step and the ratio.
Usage: python bench/ddp_overhead.py [steps]
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

WIDTH, BATCH = 256, 32

WORKLOAD = f"""
import torch
from torch.utils.data import TensorDataset
WIDTH, BATCH = {WIDTH}, {BATCH}
def data(steps):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(steps * BATCH * 2, WIDTH, generator=g)
    return TensorDataset(x, x.sum(1, keepdim=True))
def net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(WIDTH, WIDTH), torch.nn.ReLU(), torch.nn.Linear(WIDTH, 1))
"""

TRELLIS = WORKLOAD + """
import sys, time, trellis
from torch.utils.data import DataLoader
class M(trellis.Module):
    def __init__(self):
        super().__init__(); self.net = net()
    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)
steps = int(sys.argv[1])
trainer = trellis.Trainer(accelerator="cpu", strategy="ddp", devices=2, max_epochs=1, logger=False,
                          enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
start = time.perf_counter()
trainer.fit(M(), DataLoader(data(steps), batch_size=BATCH))
if trainer.is_global_zero:
    print("SECONDS", time.perf_counter() - start, flush=True)
"""

HANDWRITTEN = WORKLOAD + """
import sys, time, torch.distributed as dist, torch.multiprocessing as mp
from torch.utils.data import DataLoader, DistributedSampler
def run(rank, steps, port):
    start = time.perf_counter()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    model = torch.nn.parallel.DistributedDataParallel(net())
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    dataset = data(steps)
    loader = DataLoader(dataset, batch_size=BATCH, sampler=DistributedSampler(dataset, 2, rank, shuffle=False))
    for x, y in loader:
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward(); optimizer.step(); optimizer.zero_grad()
    dist.barrier()
    if rank == 0:
        print("SECONDS", time.perf_counter() - start, flush=True)
    dist.destroy_process_group()
if __name__ == "__main__":
    mp.start_processes(run, args=(int(sys.argv[1]), int(sys.argv[2])), nprocs=2, start_method="fork")
"""


def seconds(source: str, *arguments: str) -> float:
    path = f"/tmp/trellis_bench_{os.getpid()}_{abs(hash(source))}.py"
    with open(path, "w") as file:
        file.write(source)
    try:
        output = subprocess.run([sys.executable, path, *arguments], capture_output=True, text=True, timeout=600,
                                check=True).stdout
    finally:
        os.unlink(path)
    return float(next(line for line in output.splitlines() if line.startswith("SECONDS")).split()[1])


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    began = time.time()
    hand = seconds(HANDWRITTEN, str(steps), str(port))
    ours = seconds(TRELLIS, str(steps))
    print(f"steps per rank: {steps}, width {WIDTH}, batch {BATCH}, 2 CPU processes over gloo "
          f"(one run, {time.time() - began:.0f} s)")
    print(f"hand-written DDP loop: {hand:.3f} s ({hand / steps * 1e3:.3f} ms/step)")
    print(f"trellis strategy=ddp:  {ours:.3f} s ({ours / steps * 1e3:.3f} ms/step)")
    print(f"ratio trellis / hand-written: {ours / hand:.3f}")


if __name__ == "__main__":
    main()
