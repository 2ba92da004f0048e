"""moma.data: Fashion-MNIST (IDX files), DataConfig checks, SSLDataModule batches."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from moma.data import DataConfig, SSLDataModule, dataset_stats, load_split, num_classes
from moma.data import fashion_mnist as fm
from moma.data.idx import read_idx
from moma.errors import ConfigError, DataError

FMNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(
    not (FMNIST / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist not installed",
)


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_fake_fmnist(root: Path, n_train: int = 40, n_test: int = 12) -> Path:
    """Tiny Fashion-MNIST lookalike: image k is filled with value k (gzip IDX files)."""
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = np.broadcast_to((np.arange(n) * 5 % 256)[:, None, None], (n, 28, 28))
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(images)))
        labels = np.arange(n) % 10
        (root / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(labels)))
    return root


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    return write_fake_fmnist(tmp_path / "fmnist")


# ------------------------------------------------------------------ IDX files
def test_read_idx_roundtrip_plain_and_gz(tmp_path: Path) -> None:
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(_idx_bytes(arr))
    (tmp_path / "a.gz").write_bytes(gzip.compress(_idx_bytes(arr)))
    assert np.array_equal(read_idx(tmp_path / "a"), arr)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), arr)


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"\x00\x00\x08\x03" + struct.pack(">3I", 2, 3, 4) + bytes(10), "truncated"),
        (b"\x12\x34\x56\x78" + bytes(20), "not an IDX file"),
        (b"\x00\x00", "not an IDX file"),
    ],
)
def test_read_idx_corrupt(tmp_path: Path, payload: bytes, message: str) -> None:
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(payload)
    with pytest.raises(DataError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_truncated_gzip(tmp_path: Path) -> None:
    blob = gzip.compress(_idx_bytes(np.zeros((50, 28, 28), np.uint8)))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="corrupt or truncated gzip") as info:
        read_idx(path)
    assert str(path) in str(info.value)


# ------------------------------------------------------------- Fashion-MNIST
def _exact_stats(images: torch.Tensor) -> tuple[float, float]:
    """Mean and std in [0, 1] of uint8 images, exact via a 256-bin histogram (no float copy
    of the 60k images)."""
    hist = torch.bincount(images.flatten(), minlength=256).double()
    v = torch.arange(256, dtype=torch.float64) / 255
    mean = float((hist * v).sum() / hist.sum())
    return mean, float(((hist * (v - mean) ** 2).sum() / hist.sum()).sqrt())


@needs_fmnist
def test_fashion_mnist_loads_both_splits() -> None:
    cfg = DataConfig()
    train, test = load_split(cfg, "train"), load_split(cfg, "test")
    assert (len(train), len(test)) == (60000, 10000)
    assert train.images.shape == (60000, 1, 32, 32) and train.images.dtype == torch.uint8
    assert train.images[:, :, :2].max() == 0 and train.images[:, :, :, -2:].max() == 0  # padding
    img, label = test[0]
    assert img.shape == (3, 32, 32) and img.dtype == torch.float32 and isinstance(label, int)
    assert torch.equal(img[0], img[2])  # gray repeated to 3 channels
    assert set(train.labels.unique().tolist()) == set(range(10))
    assert num_classes(cfg) == 10
    # The hard-coded stats are those of the padded training images ...
    assert _exact_stats(train.images) == pytest.approx((fm.MEAN, fm.STD), abs=1e-4)
    assert dataset_stats(cfg) == ((fm.MEAN,) * 3, (fm.STD,) * 3)
    # ... and of the unpadded ones, used at the native img_size=28.
    inner = train.images[:, :, 2:-2, 2:-2]
    assert _exact_stats(inner) == pytest.approx((fm.NATIVE_MEAN, fm.NATIVE_STD), abs=1e-4)
    # A batched transform of `.images` gives what indexing gives.
    batch = test.transform(test.images[:4])
    assert torch.allclose(batch[0], img)


def test_fake_root_load_split_resize_and_subset(fake_root: Path) -> None:
    cfg = DataConfig(root=str(fake_root), img_size=16, subset=25)
    train, test = load_split(cfg, "train"), load_split(cfg, "val")
    assert (len(train), len(test)) == (25, 12)  # subset applies to train only
    img, label = train[3]
    assert img.shape == (3, 16, 16) and label == 3
    loader = torch.utils.data.DataLoader(test, batch_size=5)
    imgs, labels = next(iter(loader))
    assert imgs.shape == (5, 3, 16, 16) and labels.tolist() == [0, 1, 2, 3, 4]


def test_fake_root_native_28_px_is_unpadded(fake_root: Path) -> None:
    # img_size=28 is Fashion-MNIST's own size: no zero ring, no resize, the unpadded stats.
    native, padded = DataConfig(root=str(fake_root), img_size=28), DataConfig(root=str(fake_root))
    train28, train32 = load_split(native, "train"), load_split(padded, "train")
    assert train28.images.shape == (40, 1, 28, 28) and train32.images.shape == (40, 1, 32, 32)
    assert torch.equal(train28.images, train32.images[:, :, 2:-2, 2:-2])
    assert int(train28.images[3].min()) == 15  # image k is filled with 5k: content to the edge
    img, _ = train28[3]
    expected = (15 / 255 - fm.NATIVE_MEAN) / fm.NATIVE_STD
    assert img.shape == (3, 28, 28) and torch.allclose(img, torch.full_like(img, expected))
    assert dataset_stats(native) == ((fm.NATIVE_MEAN,) * 3, (fm.NATIVE_STD,) * 3)
    assert dataset_stats(DataConfig(root=str(fake_root), img_size=24)) == dataset_stats(padded)


def test_fake_root_missing_file(fake_root: Path) -> None:
    (fake_root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_split(DataConfig(root=str(fake_root)), "test")


def test_missing_root_is_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such folder"):
        load_split(DataConfig(root=str(tmp_path / "nope")), "train")


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="img_size"):
        load_split(DataConfig(img_size=0), "train")
    with pytest.raises(ConfigError, match="min_scale"):
        SSLDataModule(DataConfig(min_scale=0.0))
    with pytest.raises(ConfigError, match="views"):
        SSLDataModule(DataConfig(), views=3)
    with pytest.raises(ConfigError, match="augment"):
        SSLDataModule(DataConfig(), augment="simclr")
    with pytest.raises(ConfigError, match="split"):
        load_split(DataConfig(), "training")


# --------------------------------------------------------------- DataModule
@pytest.mark.parametrize("views, augment", [(1, "mae"), (2, "mocov3"), (2, "none")])
def test_datamodule_in_ram_batches(fake_root: Path, views: int, augment: str) -> None:
    cfg = DataConfig(root=str(fake_root), batch_size=16, img_size=24)
    dm = SSLDataModule(cfg, views=views, augment=augment)
    assert dm.batch_size == 16 and len(dm.mean) == len(dm.std) == 3
    loader = dm.train_dataloader()
    assert dm.in_memory and len(loader) == 40 // 16  # drop_last
    raw_imgs, raw_labels = next(iter(loader))
    assert raw_imgs.dtype == torch.uint8 and raw_imgs.shape == (16, 1, 32, 32)
    out, labels = dm.on_after_batch_transfer((raw_imgs, raw_labels), 0)
    assert torch.equal(labels, raw_labels)
    outs = [out] if views == 1 else out
    assert isinstance(out, torch.Tensor) == (views == 1) and len(outs) == views
    for v in outs:
        assert v.shape == (16, 3, 24, 24) and v.dtype == torch.float32
        assert torch.isfinite(v).all()
    if augment == "none":  # deterministic: resize + normalise, identical views
        assert torch.equal(outs[0], outs[1])
        mean, std = dm.mean[0], dm.std[0]
        value = raw_imgs[:, 0, 16, 16].float() / 255  # centre pixels are the constant fill
        assert torch.allclose(outs[0][:, 1, 12, 12], (value - mean) / std, atol=1e-5)
    else:
        assert not torch.equal(outs[0], outs[-1]) or views == 1


def test_datamodule_subset_and_too_small(fake_root: Path) -> None:
    dm = SSLDataModule(DataConfig(root=str(fake_root), batch_size=4, subset=10))
    dm.setup("fit")
    assert len(dm.train_dataloader().dataset) == 10
    with pytest.raises(DataError, match="fewer than data.batch_size"):
        SSLDataModule(DataConfig(root=str(fake_root), batch_size=64)).setup("fit")


def test_datamodule_per_image_pil_path(fake_root: Path) -> None:
    cfg = DataConfig(root=str(fake_root), batch_size=8, in_memory=False, img_size=16)
    dm = SSLDataModule(cfg, views=2, augment="mocov3")
    (v1, v2), labels = next(iter(dm.train_dataloader()))
    assert dm.in_memory is False
    assert v1.shape == v2.shape == (8, 3, 16, 16) and v1.dtype == torch.float32
    assert dm.on_after_batch_transfer(([v1, v2], labels), 0)[0][0] is v1  # passed through


def test_datamodule_in_lightning_trainer(fake_root: Path) -> None:
    """Lightning calls on_after_batch_transfer: the model sees augmented float batches."""
    import lightning as L

    seen = []

    class Probe(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, batch_idx):
            (v1, v2), labels = batch
            seen.append((v1.dtype, tuple(v1.shape), tuple(v2.shape), labels.dtype))
            return (self.w * v1.mean()).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = SSLDataModule(DataConfig(root=str(fake_root), batch_size=8), views=2, augment="mocov3")
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Probe(), datamodule=dm)
    assert seen == [(torch.float32, (8, 3, 32, 32), (8, 3, 32, 32), torch.int64)] * 2


def test_find_root_order_and_download_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fm, "DEBIAN_ROOT", tmp_path / "debian")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def offline(folder: Path) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(fm, "_download", offline)
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        fm.find_root(None)
    # torchvision's layout in the cache folder is found, as is the Debian folder first.
    write_fake_fmnist(tmp_path / "cache" / "moma" / "fashion-mnist" / "FashionMNIST" / "raw")
    assert fm.find_root(None) == tmp_path / "cache" / "moma" / "fashion-mnist"
    write_fake_fmnist(tmp_path / "debian")
    assert fm.find_root(None) == tmp_path / "debian"
    assert len(load_split(DataConfig(dataset="Fashion-MNIST", subset=5), "train")) == 5
