"""A small transformer language model and the WikiText-2 text it trains on (Lightning's transformer demo).

WikiText2 reads `data_dir/wikitext-2.txt`; when the file is absent and download=True it fetches it from
`WikiText2.url` first.
"""

from __future__ import annotations

import math
import os
import urllib.request
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from trellis.module import Module


class Transformer(nn.Module):
    """Embedding, positional encoding, torch's encoder-decoder Transformer and a log-softmax over the vocabulary."""

    def __init__(self, vocab_size: int = 33278, ninp: int = 200, nhead: int = 2, nhid: int = 200,
                 nlayers: int = 2, dropout: float = 0.2) -> None:
        super().__init__()
        self.pos_encoder = PositionalEncoding(ninp, dropout)
        self.embedding = nn.Embedding(vocab_size, ninp)
        self.transformer = nn.Transformer(d_model=ninp, nhead=nhead, num_encoder_layers=nlayers,
                                          num_decoder_layers=nlayers, dim_feedforward=nhid, dropout=dropout,
                                          batch_first=True)
        self.decoder = nn.Linear(ninp, vocab_size)
        self.ninp, self.vocab_size = ninp, vocab_size

    @staticmethod
    def generate_square_subsequent_mask(size: int) -> Tensor:
        """-inf above the diagonal: position i sees positions up to i only."""
        return torch.triu(torch.full((size, size), float("-inf")), diagonal=1)

    def forward(self, inputs: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        """Log-probabilities of shape (batch * length, vocab_size)."""
        if mask is None:
            mask = self.generate_square_subsequent_mask(inputs.size(1)).to(inputs.device)
        scale = math.sqrt(self.ninp)
        source = self.pos_encoder(self.embedding(inputs) * scale)
        target = self.pos_encoder(self.embedding(target) * scale)
        output = self.decoder(self.transformer(source, target, tgt_mask=mask))
        return torch.log_softmax(output, dim=-1).view(-1, self.vocab_size)


class PositionalEncoding(nn.Module):
    """Adds the sinusoidal position code (computed once, on the input's device), then dropout."""

    def __init__(self, dim: int, dropout: float = 0.1, max_len: int = 5000) -> None:
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        self.dim, self.max_len = dim, max_len
        self.pe: Tensor | None = None  # not a buffer: it is rebuilt, never saved

    def forward(self, x: Tensor) -> Tensor:
        if self.pe is None or self.pe.device != x.device:
            self.pe = self._encoding(x.device)
        # one position's code for the whole sequence, as Lightning's demo computes it (same numbers when ported)
        return self.dropout(x + self.pe[:, x.size(1)])

    def _encoding(self, device: torch.device) -> Tensor:
        position = torch.arange(self.max_len, dtype=torch.float, device=device).unsqueeze(1)
        frequency = torch.exp(torch.arange(0, self.dim, 2, device=device).float() * (-math.log(10000.0) / self.dim))
        encoding = torch.zeros(self.max_len, self.dim, device=device)
        encoding[:, 0::2] = torch.sin(position * frequency)
        encoding[:, 1::2] = torch.cos(position * frequency)
        return encoding.unsqueeze(0)


class Dictionary:
    """Word <-> index, in order of first appearance."""

    def __init__(self) -> None:
        self.word2idx: dict[str, int] = {}
        self.idx2word: list[str] = []

    def add_word(self, word: str) -> int:
        if word not in self.word2idx:
            self.word2idx[word] = len(self.idx2word)
            self.idx2word.append(word)
        return self.word2idx[word]

    def __len__(self) -> int:
        return len(self.idx2word)


def tokenize(path: str | os.PathLike) -> tuple[Tensor, Dictionary]:
    """Every word of the file (each line ending in "<eos>") as one int64 tensor of indices, and the dictionary."""
    dictionary = Dictionary()
    with open(path, encoding="utf8") as file:
        ids = [dictionary.add_word(word) for line in file for word in [*line.split(), "<eos>"]]
    return torch.tensor(ids, dtype=torch.int64), dictionary


class WikiText2(Dataset):
    """Consecutive blocks of `block_size` tokens; the target is the block shifted by one token."""

    url = "https://raw.githubusercontent.com/pytorch/examples/main/word_language_model/data/wikitext-2/train.txt"

    def __init__(self, data_dir: str | os.PathLike = Path("./data"), block_size: int = 35,
                 download: bool = True) -> None:
        super().__init__()
        self.path = Path(data_dir) / "wikitext-2.txt"
        if download:
            self.download(self.path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path} is missing: pass download=True, or put WikiText-2's train.txt there")
        self.data, self.dictionary = tokenize(self.path)
        self.block_size = block_size

    @property
    def vocab_size(self) -> int:
        return len(self.dictionary)

    def __len__(self) -> int:
        return len(self.data) // self.block_size - 1

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        start = index * self.block_size
        return self.data[start:start + self.block_size], self.data[start + 1:start + 1 + self.block_size]

    @classmethod
    def download(cls, destination: Path) -> None:
        """Fetch the text once; a failed download leaves no partial file behind."""
        if destination.exists():
            return
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = destination.with_suffix(".partial")
        try:
            with urllib.request.urlopen(cls.url, timeout=60) as response:  # noqa: S310 (a fixed https URL)
                partial.write_bytes(response.read())
        except OSError as error:
            partial.unlink(missing_ok=True)
            raise OSError(f"could not download WikiText-2 from {cls.url}: {error}; put the file at {destination}"
                          " yourself and pass download=False") from error
        partial.replace(destination)


class TransformerModule(Module):
    """The Transformer trained as a language model on WikiText2 with SGD(lr=0.1)."""

    def __init__(self, vocab_size: int = 33278) -> None:
        super().__init__()
        self.model = Transformer(vocab_size=vocab_size)

    def forward(self, inputs: Tensor, target: Tensor) -> Tensor:
        return self.model(inputs, target)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        inputs, target = batch
        return torch.nn.functional.nll_loss(self(inputs, target), target.view(-1))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.model.parameters(), lr=0.1)

    def prepare_data(self) -> None:
        WikiText2(download=True)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(WikiText2())


#: Lightning's name for TransformerModule.
LightningTransformer = TransformerModule
