"""The model the GPU benches train: a small GPT (pre-norm blocks, causal flash attention), and its data.

Shared by bench/gpu_step.py and bench/gpu_ddp.py so that every variant trains the same network on the
same tokens. Sizes come from the command line; the defaults keep one step of a few milliseconds on a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset


@dataclass(frozen=True)
class Shape:
    layers: int = 6
    width: int = 512
    heads: int = 8
    vocab: int = 8192
    sequence: int = 256
    batch: int = 32

    def describe(self) -> str:
        return f"GPT {self.layers}x{self.width}, seq {self.sequence}, batch {self.batch}, vocab {self.vocab}"


def add_shape_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = Shape()
    for name in ("layers", "width", "heads", "vocab", "sequence", "batch"):
        parser.add_argument(f"--{name}", type=int, default=getattr(defaults, name))


def shape_from(arguments: argparse.Namespace) -> Shape:
    return Shape(arguments.layers, arguments.width, arguments.heads, arguments.vocab, arguments.sequence,
                 arguments.batch)


class Block(torch.nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.attention_norm = torch.nn.LayerNorm(width)
        self.qkv = torch.nn.Linear(width, 3 * width)
        self.projection = torch.nn.Linear(width, width)
        self.mlp_norm = torch.nn.LayerNorm(width)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(width, 4 * width), torch.nn.GELU(),
                                       torch.nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(self.attention_norm(x)).split(width, dim=2)
        q, k, v = (t.view(batch, length, self.heads, width // self.heads).transpose(1, 2) for t in (q, k, v))
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.projection(attended.transpose(1, 2).reshape(batch, length, width))
        return x + self.mlp(self.mlp_norm(x))


class GPT(torch.nn.Module):
    def __init__(self, shape: Shape) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.tokens = torch.nn.Embedding(shape.vocab, shape.width)
        self.positions = torch.nn.Embedding(shape.sequence, shape.width)
        self.blocks = torch.nn.Sequential(*(Block(shape.width, shape.heads) for _ in range(shape.layers)))
        self.norm = torch.nn.LayerNorm(shape.width)
        self.head = torch.nn.Linear(shape.width, shape.vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        return self.head(self.norm(self.blocks(self.tokens(tokens) + self.positions(positions))))


def next_token_loss(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    inputs, targets = batch
    return F.cross_entropy(model(inputs).flatten(0, 1).float(), targets.flatten())


def make_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=3e-4)


def token_data(shape: Shape, batches: int) -> TensorDataset:
    """Random token sequences; targets are the inputs shifted by one."""
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, shape.vocab, (batches * shape.batch, shape.sequence + 1), generator=generator)
    return TensorDataset(tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous())


def loader(dataset: TensorDataset, shape: Shape, pin_memory: bool, sampler=None) -> DataLoader:  # noqa: ANN001
    return DataLoader(dataset, batch_size=shape.batch, sampler=sampler, pin_memory=pin_memory)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The plain loop's equivalent of a Trellis precision mode (32-true, bf16-mixed)."""
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "32-true":
        return contextlib.nullcontext()
    raise SystemExit(f"the plain loop here knows 32-true and bf16-mixed, not {precision!r}")


def require_device(device: torch.device) -> None:
    """Stop with what to do when the bench is asked for a GPU this machine does not have."""
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU is visible: run on a GPU machine, or pass --device cpu to try the bench here")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
