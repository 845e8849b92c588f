"""Per-step overhead of Trellis (and Lightning, when installed) against a plain PyTorch loop.

Tiny MLP, batch 32, one thread, in-memory batches; the variants' trials are interleaved in one process.
Each trial runs N and 2N steps: the difference over N is the steady per-step time (fixed start-up cost
cancels out), reported with its median over trials and compared with the plain loop's. Also: the time
`import trellis` takes on top of an imported torch, in fresh interpreters.

    python bench/overhead.py [--steps 2000] [--trials 7]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import torch

STEPS_DEFAULT = 2000


class MLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Batches:
    """In-memory batches as one loader (a bare list would read as a list of loaders)."""

    def __init__(self, batches: list) -> None:
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, window: slice) -> Batches:
        return Batches(self.batches[window])


def make_batches(steps: int) -> Batches:
    generator = torch.Generator().manual_seed(0)
    return Batches([(torch.randn(32, 32, generator=generator), torch.randint(0, 10, (32,), generator=generator))
                    for _ in range(steps)])


def plain_loop(batches: Batches) -> None:
    model = MLP()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for x, y in batches:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def module_class(base: type, log_every_step: bool) -> type:
    """The same model as a trellis.Module or a LightningModule."""

    class Bench(base):
        def __init__(self) -> None:
            super().__init__()
            self.model = MLP()

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.model(x), y)
            if log_every_step:
                self.log("loss", loss, prog_bar=True)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    return Bench


def trellis_run(extras: bool, root: str) -> Callable[[Batches], None]:
    import trellis

    def run(batches: Batches) -> None:
        flags = {} if extras else dict(logger=False, enable_progress_bar=False, enable_checkpointing=False)
        trainer = trellis.Trainer(max_epochs=1, enable_model_summary=False, default_root_dir=root, **flags)
        trainer.fit(module_class(trellis.Module, extras)(), batches)

    return run


def lightning_run(extras: bool, root: str) -> Callable[[Batches], None] | None:
    try:
        import lightning
    except ImportError:
        return None

    def run(batches: Batches) -> None:
        flags = {} if extras else dict(logger=False, enable_progress_bar=False, enable_checkpointing=False)
        trainer = lightning.Trainer(max_epochs=1, enable_model_summary=False, accelerator="cpu", devices=1,
                                    default_root_dir=root, **flags)
        trainer.fit(module_class(lightning.LightningModule, extras)(), batches)

    return run


def bench_variants(root: str) -> dict[str, Callable[[Batches], None]]:
    """The plain loop, Trellis with extras off and with its defaults, and Lightning likewise when installed."""
    variants: dict[str, Callable[[Batches], None]] = {
        "plain loop": plain_loop,
        "trellis, extras off": trellis_run(False, root),
        "trellis, defaults + self.log": trellis_run(True, root),
    }
    for extras, label in ((False, "lightning, extras off"), (True, "lightning, defaults + self.log")):
        run = lightning_run(extras, root)
        if run is not None:
            variants[label] = run
    return variants


def measure(steps: int, trials: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median steady seconds per step, and median fixed seconds per run, of each variant."""
    torch.set_num_threads(1)
    batches = make_batches(2 * steps)
    variants = bench_variants(tempfile.mkdtemp(prefix="trellis-bench-"))
    per_step: dict[str, list[float]] = {name: [] for name in variants}
    fixed: dict[str, list[float]] = {name: [] for name in variants}
    for run in variants.values():  # warm-up
        _timed(run, batches[:50])
    for _ in range(trials):
        for name, run in variants.items():
            short, long = _timed(run, batches[:steps]), _timed(run, batches)
            per_step[name].append((long - short) / steps)
            fixed[name].append(short - steps * per_step[name][-1])
    median = statistics.median
    return ({name: median(values) for name, values in per_step.items()},
            {name: median(values) for name, values in fixed.items()})


def _timed(run: Callable[[Batches], None], batches: Batches) -> float:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        start = time.perf_counter()
        run(batches)
        return time.perf_counter() - start


def count_calls(run: Callable[[Batches], None], batches: Batches) -> int:
    """Python function calls ('call' and 'c_call' profile events) made while `run` trains on `batches`."""
    count = 0

    def profile(frame: object, event: str, argument: object) -> None:
        nonlocal count
        if event == "call" or event == "c_call":
            count += 1

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        sys.setprofile(profile)
        try:
            run(batches)
        finally:
            sys.setprofile(None)
    return count


def calls_per_step(variants: dict[str, Callable[[Batches], None]], steps: int) -> dict[str, float]:
    """Exact calls per steady step of each variant: the slope between runs of `steps` and 2 * `steps` steps."""
    batches = make_batches(2 * steps)
    for run in variants.values():  # warm-up: first-time imports and caches are not per-step work
        count_calls(run, batches[:steps])
    return {name: (count_calls(run, batches) - count_calls(run, batches[:steps])) / steps
            for name, run in variants.items()}


def import_seconds(module: str, runs: int) -> float:
    """Median time of `import module` in fresh interpreters where torch is already imported."""
    times = []
    for _ in range(runs):
        code = f"import time, torch; start = time.perf_counter(); import {module}; print(time.perf_counter() - start)"
        output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        times.append(float(output.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=STEPS_DEFAULT)
    parser.add_argument("--trials", type=int, default=7)
    parser.add_argument("--import-runs", type=int, default=7)
    parser.add_argument("--call-steps", type=int, default=200)
    arguments = parser.parse_args()

    per_step, fixed = measure(arguments.steps, arguments.trials)
    plain = per_step["plain loop"]
    print(f"steady per-step time (runs of {arguments.steps} and {2 * arguments.steps} steps, median of "
          f"{arguments.trials} interleaved trials, 1 thread)")
    print(f"{'variant':34} {'us/step':>9} {'overhead us':>12} {'ratio':>7} {'start-up ms':>12}")
    for name, seconds in per_step.items():
        print(f"{name:34} {seconds * 1e6:9.1f} {(seconds - plain) * 1e6:12.1f} {seconds / plain:7.3f} "
              f"{fixed[name] * 1e3:12.1f}")

    calls = calls_per_step(bench_variants(tempfile.mkdtemp(prefix="trellis-bench-")), arguments.call_steps)
    print(f"\nPython calls per step ('call' + 'c_call' profile events, slope of {arguments.call_steps} vs "
          f"{2 * arguments.call_steps} steps; exact)")
    for name, count in calls.items():
        print(f"{name:34} {count:9.1f} {count - calls['plain loop']:+12.1f}")

    print(f"\nimport on top of an imported torch (median of {arguments.import_runs} fresh interpreters)")
    print(f"import trellis    {import_seconds('trellis', arguments.import_runs):.3f} s")
    try:
        import lightning  # noqa: F401
    except ImportError:
        return
    print(f"import lightning  {import_seconds('lightning', arguments.import_runs):.3f} s")


if __name__ == "__main__":
    main()
