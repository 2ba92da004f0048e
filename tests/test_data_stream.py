"""Streamed training images for an accelerator: torchvision decoders, uint8 crops of the
original image in the workers (or JPEGs decoded on the device), WebDataset tar shards."""

from __future__ import annotations

import io
import random
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

from moma.cli.main import main
from moma.data import DataConfig, SSLDataModule, load_split
from moma.data.crops import ViewCrop, make_cropper, random_resized_crop_box, resized_crop
from moma.data.decode import decode_rgb
from moma.data.device_views import CropBatch, JpegBatch
from moma.data.recipes import CROP_RATIO
from moma.data.shards import expand_shards, is_shard_spec
from moma.errors import ConfigError, DataError
from moma.run_folder import read_metrics

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def photo(side_w: int, side_h: int, seed: int) -> Image.Image:
    """A smooth random colour field with noise (compresses like a photo)."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    arr = np.asarray(coarse.resize((side_w, side_h), Image.Resampling.BICUBIC), np.int16)
    arr = arr + rng.integers(-10, 11, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def jpeg_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "jpegs"
    for c in range(2):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(12):
            photo(40 + 3 * i, 30 + 2 * c, 10 * c + i).save(root / f"class{c}" / f"{i:02d}.jpg")
    return root


def make_shards(folder: Path, out: Path, per_shard: int = 8, bad: int | None = None) -> str:
    """Pack the folder's JPEGs into WebDataset shards with ``.cls`` labels."""
    files = sorted(folder.glob("*/*.jpg"))
    out.mkdir(parents=True, exist_ok=True)
    for s in range(0, len(files), per_shard):
        with tarfile.open(out / f"part-{s // per_shard:03d}.tar", "w") as tar:
            for k, f in enumerate(files[s : s + per_shard]):
                key = f"{f.parent.name}_{f.stem}"
                data = f.read_bytes()
                if bad is not None and s + k == bad:
                    data = data[: len(data) // 3]  # a truncated JPEG
                for name, payload in ((f"{key}.jpg", data), (f"{key}.cls", f.parent.name[-1])):
                    raw = payload if isinstance(payload, bytes) else payload.encode()
                    info = tarfile.TarInfo(name)
                    info.size = len(raw)
                    tar.addfile(info, io.BytesIO(raw))
    return str(out / f"part-{{000..{(len(files) - 1) // per_shard:03d}}}.tar")


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic."""
    grid = np.sort(np.concatenate([a, b]))
    ca = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cb = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(ca - cb).max())


# ------------------------------------------------------------- augmentation semantics
@pytest.mark.parametrize(
    ("height", "width", "scale"), [(200, 300, (0.08, 1.0)), (96, 64, (0.2, 1.0))]
)
def test_crop_boxes_follow_torchvision_random_resized_crop(height, width, scale):
    """Same distribution of area fraction, aspect ratio and position as torchvision's
    RandomResizedCrop (what the PIL path uses), by a two-sample KS test."""
    n = 3000
    ours = [random_resized_crop_box(height, width, scale, random.Random(i)) for i in range(n)]
    tv = v2.RandomResizedCrop(8, scale=scale, ratio=CROP_RATIO)
    probe = torch.zeros(3, height, width)
    torch.manual_seed(0)
    theirs = []
    for _ in range(n):
        p = tv.make_params([probe])
        theirs.append((p["top"], p["left"], p["height"], p["width"]))
    a, b = np.array(ours, dtype=float), np.array(theirs, dtype=float)
    for name, f in (
        ("area", lambda x: x[:, 2] * x[:, 3] / (height * width)),
        ("log ratio", lambda x: np.log(x[:, 3] / x[:, 2])),
        ("center y", lambda x: (x[:, 0] + x[:, 2] / 2) / height),
        ("center x", lambda x: (x[:, 1] + x[:, 3] / 2) / width),
    ):
        assert ks_statistic(f(a), f(b)) < 0.06, name  # critical value ~0.05 at p=0.001
    # every box lies inside the image and within the scale bounds (or is the fallback)
    assert (a[:, 0] >= 0).all() and (a[:, 0] + a[:, 2] <= height).all()
    assert (a[:, 1] >= 0).all() and (a[:, 1] + a[:, 3] <= width).all()


def test_crop_fallback_matches_torchvision_on_extreme_shapes():
    """An image no try fits gets torchvision's central crop within the ratio bounds."""
    tv = v2.RandomResizedCrop(8, scale=(0.9, 1.0), ratio=CROP_RATIO)
    for height, width in ((10, 400), (400, 10)):
        torch.manual_seed(0)
        p = tv.make_params([torch.zeros(3, height, width)])
        want = (p["top"], p["left"], p["height"], p["width"])
        assert random_resized_crop_box(height, width, (0.9, 1.0), random.Random(0)) == want


def test_worker_crop_matches_the_pil_pipeline_pixels():
    """For the same box, the uint8 crop made from torchvision's decode equals the old PIL
    path's crop within JPEG-decoder and resampling rounding."""
    img = photo(120, 90, 3)
    data = jpeg_bytes(img)
    pil = Image.open(io.BytesIO(data)).convert("RGB")
    box = (10, 20, 60, 80)
    for bicubic in (True, False):
        mode = InterpolationMode.BICUBIC if bicubic else InterpolationMode.BILINEAR
        old = TF.pil_to_tensor(TF.resized_crop(pil, *box, [32, 32], interpolation=mode))
        new = resized_crop(decode_rgb(data), ViewCrop(box, False), 32, bicubic)
        diff = (new.int() - old.int()).abs().float()
        assert diff.mean() < 1.5 and diff.max() <= 12, (bicubic, diff.mean(), diff.max())
        flipped = resized_crop(decode_rgb(data), ViewCrop(box, True), 32, bicubic)
        assert torch.equal(flipped, new.flip(-1))


def test_views_flip_half_and_recipes_per_view():
    cropper = make_cropper("mocov3", 2, 16, 0.2)
    crops = [cropper.boxes(50, 60, seed) for seed in range(2000)]
    flips = np.array([[c.flip for c in views] for views in crops])
    assert abs(flips.mean() - 0.5) < 0.03
    areas = np.array([c.box[2] * c.box[3] / 3000 for views in crops for c in views])
    assert areas.min() < 0.15  # MoCo v3's scale reaches down to 0.08
    mae = make_cropper("mae", 1, 16, 0.6)
    assert min(c.box[2] * c.box[3] for s in range(500) for c in mae.boxes(50, 60, s)) >= 0.55 * 3000


# ------------------------------------------------------------------ folders streamed
def batches(cfg: DataConfig, views: int = 1, augment: str = "mae", n: int = 2) -> list:
    dm = SSLDataModule(cfg, views=views, augment=augment)
    out = []
    for batch in dm.train_dataloader():
        out.append(dm.on_after_batch_transfer(batch, 0))
        if len(out) == n:
            return out
    return out


def stream_cfg(root, **kw) -> DataConfig:
    base = dict(dataset=str(root), img_size=16, batch_size=6, in_memory=False, num_workers=0)
    base.update(kw)
    return DataConfig(**base)


def test_decode_paths_give_the_same_normalised_views(folder):
    """Workers' crops and device-decoded JPEGs are the same images; shapes and stats hold."""
    dm = SSLDataModule(stream_cfg(folder, decode="workers"), views=2, augment="mocov3")
    raw = next(iter(dm.train_dataloader()))
    assert isinstance(raw, CropBatch) and raw.crops.dtype == torch.uint8
    assert raw.crops.shape == (6, 2, 3, 16, 16)
    a = batches(stream_cfg(folder, decode="workers"), 2, "mocov3")
    b = batches(stream_cfg(folder, decode="device"), 2, "mocov3")
    for (va, ya), (vb, yb) in zip(a, b):
        assert torch.equal(ya, yb)
        for x, y in zip(va, vb):
            assert x.shape == (6, 3, 16, 16) and x.dtype == torch.float32
            torch.testing.assert_close(x, y, rtol=0, atol=1e-6)
    dm = SSLDataModule(stream_cfg(folder, decode="device"), views=1)
    assert isinstance(next(iter(dm.train_dataloader())), JpegBatch)


def test_streamed_crops_do_not_depend_on_workers(folder):
    """An image's crops are a function of (seed, epoch, index): 0 or 2 workers, same batches."""
    one = batches(stream_cfg(folder, num_workers=0), n=3)
    two = batches(stream_cfg(folder, num_workers=2), n=3)
    for (x0, y0), (x1, y1) in zip(one, two):
        assert torch.equal(y0, y1) and torch.equal(x0, x1)
    other_seed = batches(stream_cfg(folder, seed=1), n=1)
    assert not torch.equal(other_seed[0][0], one[0][0])


def test_auto_decode_is_workers_on_the_cpu(folder):
    dm = SSLDataModule(stream_cfg(folder, decode="auto"))
    assert isinstance(next(iter(dm.train_dataloader())), CropBatch)
    dm = SSLDataModule(stream_cfg(folder, decode="pil"))
    assert isinstance(next(iter(dm.train_dataloader()))[0], torch.Tensor)


def test_undecodable_jpeg_on_the_device_is_replaced_or_refused(folder):
    victim = sorted(folder.glob("*/*.jpg"))[0]
    victim.write_bytes(victim.read_bytes()[:200])  # header intact, pixels gone
    cfg = stream_cfg(folder, decode="device", batch_size=24)
    with pytest.warns(UserWarning, match="unreadable image"):
        views, labels = batches(cfg, n=1)[0]
    assert torch.isfinite(views).all() and views.shape[0] == 24
    with pytest.raises(DataError, match=victim.name):
        batches(stream_cfg(folder, decode="device", batch_size=24, strict=True), n=1)


def test_bad_decode_option_names_it():
    with pytest.raises(ConfigError, match="data.decode"):
        SSLDataModule(DataConfig(decode="gpu"))


# ------------------------------------------------------------------------ tar shards
def test_shard_specs(folder, tmp_path):
    pattern = make_shards(folder, tmp_path / "shards")
    assert is_shard_spec(pattern) and not is_shard_spec(str(folder))
    assert len(expand_shards(pattern)) == 3
    assert len(expand_shards(str(tmp_path / "shards" / "part-*.tar"))) == 3
    with pytest.raises(DataError, match="no tar shard matches"):
        expand_shards(str(tmp_path / "none-{0..2}.tar"))
    with pytest.raises(DataError, match="tar shards are for training"):
        load_split(DataConfig(dataset=pattern), "val")


@pytest.mark.parametrize("workers", [0, 2])
def test_shards_give_equal_epochs_of_labelled_crops(folder, tmp_path, workers):
    pattern = make_shards(folder, tmp_path / "shards")
    cfg = DataConfig(dataset=pattern, img_size=16, batch_size=4, num_workers=workers)
    dm = SSLDataModule(cfg, views=2, augment="mocov3")
    loader = dm.train_dataloader()
    for _ in range(2):  # two epochs, each exactly len(loader) batches
        got = [dm.on_after_batch_transfer(b, 0) for b in loader]
        assert len(got) == len(loader) == 24 // 4
        labels = torch.cat([y for _, y in got])
        assert set(labels.tolist()) <= {0, 1} and labels.numel() == 24
        assert got[0][0][0].shape == (4, 3, 16, 16)


def test_bad_sample_in_a_shard_is_skipped_or_refused(folder, tmp_path):
    """A truncated JPEG is skipped with a warning (the epoch keeps its length: the stream
    reads on), or raises naming the sample with ``strict``. The shuffle buffer decides when
    it comes up, so several epochs are read."""
    pattern = make_shards(folder, tmp_path / "shards", bad=3)
    cfg = DataConfig(dataset=pattern, img_size=16, batch_size=4, decode="workers")
    dm = SSLDataModule(cfg)
    loader = dm.train_dataloader()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(10):
            assert sum(1 for _ in loader) == 6
    assert dm.skipped_images >= 1
    assert any("unreadable sample" in str(w.message) for w in caught)
    strict = SSLDataModule(DataConfig(dataset=pattern, img_size=16, batch_size=4, strict=True))
    loader = strict.train_dataloader()
    with pytest.raises(DataError, match="class0_03"):
        for _ in range(10):
            list(loader)


def test_mae_trains_end_to_end_on_shards(folder, tmp_path):
    """``moma pretrain mae --data.dataset 'part-{000..002}.tar'``: a run, a checkpoint, an
    export, a finite loss."""
    pattern = make_shards(folder, tmp_path / "shards")
    out = tmp_path / "run"
    rc = main([
        "pretrain", "mae", "--data.dataset", pattern, "--data.img_size", "16",
        "--data.batch_size", "4", "--data.num_workers", "2",
        "--backbone.img_size", "16", "--backbone.patch_size", "4", "--backbone.depth", "1",
        "--backbone.embed_dim", "32", "--backbone.num_heads", "2",
        "--mae.decoder_embed_dim", "16", "--mae.decoder_depth", "1", "--mae.decoder_num_heads", "2",
        "--trainer.max_epochs", "2", "--trainer.out_dir", str(out), "--trainer.log_every_n_steps", "1",
        "--trainer.precision", "32-true", "--trainer.progress_bar", "false",
        "--trainer.threads", "1",
    ])  # fmt: skip
    assert rc == 0
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2 * 6  # two epochs of 24 samples / batch 4
    assert (out / "backbone.safetensors").exists()
    losses = [v for _, v in read_metrics(out)]
    assert losses and all(np.isfinite(losses))
