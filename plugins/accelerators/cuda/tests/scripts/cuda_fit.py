"""One training run through trellis.Trainer for the GPU tests: a small transformer learns to copy tokens.

    python cuda_fit.py --out DIR --strategy ddp --devices 2 [--precision bf16-mixed] [--accelerator cuda]

Each rank writes DIR/rank<global rank>.json: world size, process-group backend, device type, parameter
dtype, its losses and a digest of its final weights; DIR/final.ckpt is saved through the strategy. The
accelerator is an option so that the script itself can be tried on CPU (gloo) where no GPU is.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

import trellis

VOCAB, LENGTH, WIDTH, BATCH = 64, 16, 64, 16


class CopyTransformer(trellis.Module):
    """Embedding, two pre-norm encoder layers and a head; the loss is cross-entropy on copying the input."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(VOCAB, WIDTH)
        layer = torch.nn.TransformerEncoderLayer(WIDTH, nhead=4, dim_feedforward=4 * WIDTH, dropout=0.0,
                                                 batch_first=True, norm_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = torch.nn.Linear(WIDTH, VOCAB)
        self.losses: list[float] = []
        self.compute_dtypes: set[str] = set()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (tokens,) = batch
        logits = self.head(self.encoder(self.embed(tokens)))
        self.compute_dtypes.add(str(logits.dtype))
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), tokens.flatten())
        self.losses.append(float(loss.detach()))
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=3e-3)


def copy_data(batches: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(5)
    return TensorDataset(torch.randint(0, VOCAB, (batches * BATCH, LENGTH), generator=generator))


def digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 of every tensor's bytes, in key order: equal digests mean bit-identical weights.

    Sharded (FSDP) tensors are gathered whole first, a collective every rank takes part in.
    """
    hasher = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach()
        tensor = (tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor).cpu().contiguous()
        hasher.update(key.encode())
        hasher.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return hasher.hexdigest()


class Report(trellis.Callback):
    """Writes what this rank saw and ended with."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.backend: str | None = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.backend = str(torch.distributed.get_backend()) if distributed else None

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        parameter = next(pl_module.parameters())
        report = {
            "global_rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "backend": self.backend,
            "device_type": parameter.device.type,
            "param_dtype": str(parameter.dtype),
            "compute_dtypes": sorted(pl_module.compute_dtypes),
            "losses": pl_module.losses,
            "digest": digest(pl_module.state_dict()),
        }
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--strategy", default="ddp")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--accelerator", default="cuda")
    parser.add_argument("--steps", type=int, default=40)
    arguments = parser.parse_args()
    arguments.out.mkdir(parents=True, exist_ok=True)
    trainer = trellis.Trainer(
        accelerator=arguments.accelerator, strategy=arguments.strategy, devices=arguments.devices,
        precision=arguments.precision, max_steps=arguments.steps, logger=False, enable_progress_bar=False,
        enable_checkpointing=False, enable_model_summary=False, callbacks=[Report(arguments.out)],
        default_root_dir=arguments.out,
    )
    loader = DataLoader(copy_data(arguments.steps * arguments.devices), batch_size=BATCH)
    trainer.fit(CopyTransformer(), loader)
    trainer.save_checkpoint(arguments.out / "final.ckpt")


if __name__ == "__main__":
    main()
