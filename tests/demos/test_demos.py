"""trellis.demos: Lightning's boring classes, MNIST and the transformer demo, with Lightning's numbers."""

from __future__ import annotations

import gzip
import http.server
import os
import struct
import threading
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

import trellis
from trellis.demos import (
    BoringDataModule,
    BoringModel,
    DemoModel,
    ManualOptimBoringModel,
    RandomDataset,
    RandomDictDataset,
    RandomIterableDataset,
    RandomIterableDatasetWithLen,
    Transformer,
    TransformerModule,
    WikiText2,
)
from trellis.demos.mnist_datamodule import MNIST, MNIST_DIR_VARIABLE, MNISTDataModule

REAL_MNIST = Path(os.environ.get(MNIST_DIR_VARIABLE) or Path(__file__).parents[3] / "shared" / "data" / "mnist")


def quiet_trainer(**flags) -> trellis.Trainer:
    return trellis.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                           enable_checkpointing=False, **flags)


def test_boring_model_on_boring_data_trains_like_the_hand_written_loop():
    torch.manual_seed(3)
    data, model = BoringDataModule(), BoringModel()
    torch.manual_seed(3)
    samples, layer = torch.randn(256, 32), torch.nn.Linear(32, 2)  # the same draws, in the same order
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
    for _ in range(2):
        for sample in samples[:64]:
            output = layer(sample[None])
            loss = torch.nn.functional.mse_loss(output, torch.ones_like(output))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()

    quiet_trainer(max_epochs=2).fit(model, datamodule=data)
    assert torch.equal(model.layer.weight, layer.weight) and torch.equal(model.layer.bias, layer.bias)
    assert len(data.random_val) == 64
    results = quiet_trainer().test(model, datamodule=data)
    assert len(data.random_test) == 64 and results == [{}]  # the boring model logs nothing


def test_boring_model_alone_uses_its_own_random_loaders():
    model = BoringModel()
    trainer = quiet_trainer(max_epochs=1, limit_val_batches=2)
    trainer.fit(model)
    assert trainer.global_step == 64
    assert quiet_trainer().validate(model) == [{}]


def test_manual_optimization_boring_model_steps_once_per_batch():
    model = ManualOptimBoringModel()
    before = model.layer.weight.detach().clone()
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=5, limit_val_batches=0)
    trainer.fit(model)
    assert not model.automatic_optimization and trainer.global_step == 5
    assert not torch.equal(before, model.layer.weight)


def test_demo_model_drives_its_relu_outputs_down():
    torch.manual_seed(0)
    model, data = DemoModel(out_dim=4), RandomDataset(32, 64)
    before = model(data.data).sum().item()
    quiet_trainer(max_epochs=3).fit(model, DataLoader(data, batch_size=8))
    assert model(data.data).sum().item() < before * 0.5


def test_random_datasets():
    dictionary = RandomDictDataset(4, 3)
    assert len(dictionary) == 3 and torch.equal(dictionary[1]["b"], dictionary[1]["a"] + 2)
    iterable = RandomIterableDataset(4, 5)
    first, second = list(iterable), list(iterable)
    assert len(first) == 5 and first[0].shape == (4,) and not torch.equal(first[0], second[0])
    assert len(RandomIterableDatasetWithLen(4, 5)) == 5
    assert not hasattr(iterable, "__len__")


def write_mnist(directory: Path, split: str, images: torch.Tensor, labels: torch.Tensor, magic: int = 2051) -> None:
    """IDX files as the MNIST distribution has them (gzipped, big-endian header)."""
    directory.mkdir(parents=True, exist_ok=True)
    with gzip.open(directory / f"{split}-images-idx3-ubyte.gz", "wb") as file:
        file.write(struct.pack(">IIII", magic, len(images), 28, 28) + images.to(torch.uint8).numpy().tobytes())
    with gzip.open(directory / f"{split}-labels-idx1-ubyte.gz", "wb") as file:
        file.write(struct.pack(">II", 2049, len(labels)) + labels.to(torch.uint8).numpy().tobytes())


@pytest.fixture
def tiny_mnist(tmp_path, monkeypatch):
    monkeypatch.delenv(MNIST_DIR_VARIABLE, raising=False)
    images = torch.arange(20 * 784).remainder(256).view(20, 28, 28)
    labels = torch.arange(20).remainder(10)
    write_mnist(tmp_path / "MNIST" / "raw", "train", images, labels)
    write_mnist(tmp_path / "MNIST" / "raw", "t10k", images[:6], labels[:6])
    return tmp_path, images, labels


def test_mnist_reads_idx_files_where_torchvision_keeps_them(tiny_mnist):
    root, images, labels = tiny_mnist
    dataset = MNIST(root, train=True, download=False)
    image, label = dataset[3]
    assert len(dataset) == 20 and label == 3 and image.shape == (1, 28, 28)
    assert torch.allclose(image[0], images[3].float() / 255)
    normalized, _ = MNIST(root, train=True, download=False, normalize=(0.5, 0.5))[3]
    assert torch.allclose(normalized, (image - 0.5) / 0.5)
    assert len(MNIST(root, train=False, download=False)) == 6


def test_mnist_hands_transforms_a_greyscale_image_as_torchvision_does(tiny_mnist):
    root, images, _ = tiny_mnist
    pil = pytest.importorskip("PIL.Image", reason="Pillow not installed")
    received = []
    dataset = MNIST(root, train=True, download=False, transform=lambda image: received.append(image) or 0,
                    target_transform=lambda label: label * 10)
    assert dataset[4] == (0, 40)
    assert isinstance(received[0], pil.Image) and received[0].mode == "L"
    assert received[0].getpixel((0, 0)) == int(images[4, 0, 0])


def test_mnist_directory_from_the_environment_and_a_clear_error_without_files(tiny_mnist, tmp_path, monkeypatch):
    root, _, _ = tiny_mnist
    elsewhere = tmp_path / "elsewhere"
    with pytest.raises(FileNotFoundError, match=MNIST_DIR_VARIABLE):
        MNIST(elsewhere, download=False)
    monkeypatch.setenv(MNIST_DIR_VARIABLE, str(root / "MNIST" / "raw"))
    assert len(MNIST(elsewhere, download=False)) == 20


def test_mnist_rejects_a_file_that_is_not_idx(tmp_path, monkeypatch):
    monkeypatch.delenv(MNIST_DIR_VARIABLE, raising=False)
    write_mnist(tmp_path, "train", torch.zeros(2, 28, 28), torch.zeros(2), magic=1234)
    with pytest.raises(ValueError, match="not an MNIST IDX file"):
        MNIST(tmp_path, train=True)


def test_mnist_datamodule_splits_with_its_seed(tiny_mnist):
    root, _, _ = tiny_mnist
    data = MNISTDataModule(str(root), val_split=5, batch_size=4, seed=1)
    data.prepare_data()
    data.setup("fit")
    again = MNISTDataModule(str(root), val_split=5, batch_size=4, seed=1)
    again.setup("fit")
    assert len(data.dataset_train) == 15 and list(data.dataset_val.indices) == list(again.dataset_val.indices)
    assert len(data.train_dataloader()) == 3 and len(data.test_dataloader()) == 1  # drop_last, as Lightning's
    assert data.num_classes == 10


@pytest.mark.skipif(not (REAL_MNIST / "train-labels-idx1-ubyte.gz").exists(),
                    reason=f"real MNIST not found: set {MNIST_DIR_VARIABLE} to a directory with the four .gz files")
def test_real_mnist_has_its_published_sizes_and_label_counts():
    train, test = MNIST(REAL_MNIST, train=True, download=False), MNIST(REAL_MNIST, train=False, download=False)
    assert (len(train), len(test)) == (60000, 10000)
    assert torch.bincount(train.targets).tolist()[:3] == [5923, 6742, 5958]
    image, label = train[0]
    assert label == 5 and 0.0 <= image.min() and image.max() == 1.0


def test_transformer_gives_log_probabilities_per_token():
    torch.manual_seed(0)
    model = Transformer(vocab_size=50, ninp=8, nhead=2, nhid=16, nlayers=1, dropout=0.0)
    inputs = torch.randint(0, 50, (3, 7))
    output = model(inputs, inputs)
    assert output.shape == (3 * 7, 50)
    assert torch.allclose(output.exp().sum(dim=-1), torch.ones(21), atol=1e-5)


TEXT = "the cat sat on the mat\nthe dog sat on the log\n" * 20


@pytest.fixture
def text_server(tmp_path):
    """WikiText's text served over HTTP on loopback; /missing answers 404."""
    (tmp_path / "served").mkdir()
    (tmp_path / "served" / "train.txt").write_text(TEXT)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path / "served"), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join(timeout=10)


def test_wikitext2_downloads_once_then_reads_blocks(text_server, tmp_path, monkeypatch):
    monkeypatch.setattr(WikiText2, "url", f"{text_server}/train.txt")
    dataset = WikiText2(tmp_path / "data", block_size=5)
    assert (tmp_path / "data" / "wikitext-2.txt").read_text() == TEXT
    assert dataset.vocab_size == 8  # the cat sat on mat dog log <eos>
    inputs, target = dataset[1]
    assert torch.equal(inputs[1:], target[:-1]) and len(dataset) == len(dataset.data) // 5 - 1
    monkeypatch.setattr(WikiText2, "url", f"{text_server}/missing")
    assert len(WikiText2(tmp_path / "data", block_size=5)) == len(dataset)  # present: not fetched again


def test_wikitext2_failed_download_leaves_nothing_behind(text_server, tmp_path, monkeypatch):
    monkeypatch.setattr(WikiText2, "url", f"{text_server}/missing")
    with pytest.raises(OSError, match="could not download WikiText-2"):
        WikiText2(tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []
    with pytest.raises(FileNotFoundError, match="download=True"):
        WikiText2(tmp_path / "data", download=False)


def test_transformer_module_trains_on_wikitext(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "wikitext-2.txt").write_text(TEXT)
    monkeypatch.chdir(tmp_path)
    dataset = WikiText2(download=False)
    torch.manual_seed(0)
    model = TransformerModule(vocab_size=dataset.vocab_size)
    before = [parameter.detach().clone() for parameter in model.parameters()]
    trainer = quiet_trainer(max_steps=2)
    trainer.fit(model)
    assert trainer.global_step == 2
    assert any(not torch.equal(old, new) for old, new in zip(before, model.parameters()))
