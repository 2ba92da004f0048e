"""moma.data on image folders: layouts, splits, odd image modes, bad files."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from moma.data import DataConfig, SSLDataModule, load_split, num_classes
from moma.data.file_dataset import ImageFileDataset
from moma.data.image_io import load_rgb
from moma.data.splits import IMAGENET_MEAN
from moma.errors import DataError


def _img(path: Path, size: tuple[int, int] = (20, 14), mode: str = "RGB", value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    img = img if mode == "RGB" else img.convert(mode)
    img.save(path)
    return path


def _truncated_jpeg(path: Path) -> Path:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(
        buf, format="JPEG"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def _classes(root: Path, names=("cat", "dog"), per_class: int = 3) -> Path:
    for c, name in enumerate(names):
        for i in range(per_class):
            _img(root / name / f"{i}.png", value=10 * c + i)
    return root


# ------------------------------------------------------------------ layouts
def test_class_layout(tmp_path: Path) -> None:
    root = _classes(tmp_path / "ds")
    _img(root / "dog" / "sub" / "deep.jpg")  # nested images belong to the class
    (root / "notes.txt").write_text("not an image")
    cfg = DataConfig(dataset=str(root), img_size=16)
    ds = load_split(cfg, "train")
    assert len(ds) == 7 and ds.labels.tolist() == [0, 0, 0, 1, 1, 1, 1]
    img, label = ds[0]
    assert img.shape == (3, 16, 16) and img.dtype == torch.float32 and label == 0
    assert num_classes(cfg) == 2
    assert ds.mean == IMAGENET_MEAN
    with pytest.raises(DataError, match="no train/ and val/"):
        load_split(cfg, "test")


def test_flat_folder_unlabelled(tmp_path: Path) -> None:
    for i in range(4):
        _img(tmp_path / f"{i}.jpg", value=i)
    cfg = DataConfig(dataset=str(tmp_path), img_size=8)
    ds = load_split(cfg, "train")
    assert len(ds) == 4 and set(ds.labels.tolist()) == {-1}
    assert num_classes(cfg) == 0


def test_train_val_split_shares_class_indices(tmp_path: Path) -> None:
    _classes(tmp_path / "train", names=("a", "b", "c"), per_class=2)
    _classes(tmp_path / "val", names=("b", "c"), per_class=1)  # no "a" in val
    cfg = DataConfig(dataset=str(tmp_path), img_size=8)
    assert len(load_split(cfg, "train")) == 6
    val = load_split(cfg, "val")
    assert val.labels.tolist() == [1, 2]
    assert load_split(cfg, "test").labels.tolist() == [1, 2]  # test falls back to val
    assert num_classes(cfg) == 3
    _img(tmp_path / "val" / "zebra" / "0.png")
    with pytest.raises(DataError, match="zebra"):
        load_split(cfg, "val")


def test_streaming_matches_in_memory(tmp_path: Path) -> None:
    root = _classes(tmp_path / "ds", per_class=2)
    mem = load_split(DataConfig(dataset=str(root), img_size=12), "train")
    disk = load_split(DataConfig(dataset=str(root), img_size=12, in_memory=False), "train")
    assert isinstance(disk, ImageFileDataset) and len(disk) == len(mem) == 4
    for i in range(4):
        assert torch.allclose(disk[i][0], mem[i][0], atol=1e-5) and disk[i][1] == mem[i][1]


@pytest.mark.parametrize("in_memory", [True, False])
def test_datamodule_on_folder(tmp_path: Path, in_memory: bool) -> None:
    root = _classes(tmp_path / "ds", per_class=4)
    cfg = DataConfig(dataset=str(root), img_size=16, batch_size=4, in_memory=in_memory)
    dm = SSLDataModule(cfg, views=1, augment="mae")
    loader = dm.train_dataloader()
    assert len(loader) == 2
    imgs, labels = dm.on_after_batch_transfer(next(iter(loader)), 0)
    assert imgs.shape == (4, 3, 16, 16) and imgs.dtype == torch.float32
    assert labels.dtype == torch.int64 and dm.in_memory is in_memory


# ---------------------------------------------------------------- bad inputs
def test_missing_empty_and_imageless_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such folder") as info:
        load_split(DataConfig(dataset=str(tmp_path / "missing")), "train")
    assert "missing" in str(info.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="folder is empty"):
        load_split(DataConfig(dataset=str(empty)), "train")
    with pytest.raises(DataError, match="folder is empty"):
        num_classes(DataConfig(dataset=str(empty)))
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.txt").write_text("x")
    (docs / "sub" / "b.csv").write_text("x")
    with pytest.raises(DataError, match="no image files"):
        load_split(DataConfig(dataset=str(docs)), "train")
    file = tmp_path / "a.txt"
    file.write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        load_split(DataConfig(dataset=str(file)), "train")


def test_truncated_jpeg_skipped_with_warning(tmp_path: Path) -> None:
    root = _classes(tmp_path / "ds", per_class=2)
    bad = _truncated_jpeg(root / "dog" / "broken.jpg")
    (root / "cat" / "fake.png").write_text("not a png")
    cfg = DataConfig(dataset=str(root), img_size=8)
    with pytest.warns(UserWarning) as record:
        ds = load_split(cfg, "train")
    messages = [str(w.message) for w in record]
    assert any(str(bad) in m for m in messages)
    assert any("fake.png" in m for m in messages)
    assert any("skipped 2 unreadable image(s) of 6" in m for m in messages)
    assert len(ds) == 4
    with pytest.raises(DataError, match="fake.png|broken.jpg"):
        load_split(DataConfig(dataset=str(root), strict=True), "train")


def test_truncated_jpeg_streaming(tmp_path: Path) -> None:
    root = _classes(tmp_path / "ds", per_class=2)
    bad = _truncated_jpeg(root / "cat" / "2_broken.jpg")  # sorted after 0.png, 1.png
    cfg = DataConfig(dataset=str(root), img_size=8, in_memory=False)
    ds = load_split(cfg, "train")
    with pytest.warns(UserWarning, match="2_broken.jpg"):
        img, label = ds[2]  # the broken file: the next image stands in
    assert img.shape == (3, 8, 8) and label == 1 and ds.num_skipped == 1
    strict = load_split(
        DataConfig(dataset=str(root), img_size=8, in_memory=False, strict=True), "train"
    )
    with pytest.raises(DataError) as info:
        strict[2]
    assert str(bad) in str(info.value)


@pytest.mark.parametrize("decode", ["workers", "pil"])
def test_streaming_datamodule_reports_skips(tmp_path: Path, decode: str) -> None:
    root = _classes(tmp_path / "ds", per_class=2)
    _truncated_jpeg(root / "cat" / "2_broken.jpg")
    cfg = DataConfig(dataset=str(root), img_size=8, batch_size=5, in_memory=False, decode=decode)
    dm = SSLDataModule(cfg, augment="none")
    with pytest.warns(UserWarning, match="2_broken.jpg"):
        raw = next(iter(dm.train_dataloader()))
    batch = dm.on_after_batch_transfer(raw, 0)  # epoch 0 seen
    assert batch[0].shape == (5, 3, 8, 8) and dm.skipped_images == 1
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        dm.teardown("fit")


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "1", "CMYK", "I;16", "PA-trns"])
def test_odd_modes_become_rgb8(tmp_path: Path, mode: str) -> None:
    rng = np.random.default_rng(0)
    if mode == "I;16":
        img = Image.fromarray((rng.integers(0, 65536, (9, 7))).astype(np.uint16))
        path = tmp_path / "wide.png"
    elif mode == "PA-trns":
        img = Image.fromarray(rng.integers(0, 256, (9, 7, 3), np.uint8)).convert("P")
        img.info["transparency"] = 0
        path = tmp_path / "palette.png"
    else:
        img = Image.fromarray(rng.integers(0, 256, (9, 7, 3), np.uint8)).convert(mode)
        path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    img.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. no PIL palette-transparency warning
        out = load_rgb(path)
    arr = np.asarray(out)
    assert out.mode == "RGB" and arr.dtype == np.uint8 and arr.shape == (9, 7, 3)
    if mode == "I;16":
        assert arr.max() > 200 and arr.min() < 50  # scaled, not clipped to 255
    ds = load_split(DataConfig(dataset=str(tmp_path), img_size=8), "train")
    assert ds.images.shape == (1, 3, 8, 8)
