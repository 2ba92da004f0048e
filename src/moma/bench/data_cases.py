"""The data pipeline alone: how many training images per second it can deliver.

A step fetches the next batch from ``SSLDataModule.train_dataloader()`` (a new epoch starts
when one ends), moves it to the device and runs ``on_after_batch_transfer``, exactly what a
Lightning training loop does before ``training_step``. Three sources:

- the embedded Fashion-MNIST (in RAM: uint8 batches, augmented on the device as a batch);
- a folder of JPEGs streamed from disk (PIL decode + per-image torchvision v2 in workers);
- the same folder decoded into RAM once, then augmented as a batch.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from moma.bench.cases import Case
from moma.data import DataConfig, SSLDataModule

log = logging.getLogger(__name__)


def write_jpegs(folder: Path, count: int, side: int, seed: int = 0) -> list[Path]:
    """Write ``count`` RGB JPEGs of ``side x side`` px (smooth random colour fields with
    noise, so they compress like photos) into ``folder``; returns their paths."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        coarse = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((side, side), Image.Resampling.BICUBIC)
        arr = np.asarray(img, dtype=np.int16) + rng.integers(-12, 13, size=(side, side, 3))
        path = folder / f"img_{i:05d}.jpg"
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


class BatchStream:
    """Endless training batches of a datamodule, each moved to the device and finished by
    ``on_after_batch_transfer`` (the in-RAM augmentation)."""

    def __init__(self, dm: SSLDataModule, device: torch.device) -> None:
        self.dm, self.device = dm, device
        self.loader = dm.train_dataloader()
        self.it = iter(self.loader)

    def _next(self):
        try:
            return next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            return next(self.it)

    def __call__(self):
        imgs, labels = self._next()
        if isinstance(imgs, list):
            imgs = [v.to(self.device, non_blocking=True) for v in imgs]
        else:
            imgs = imgs.to(self.device, non_blocking=True)
        return self.dm.on_after_batch_transfer((imgs, labels.to(self.device)), 0)


def _stream(cfg: DataConfig, views: int, augment: str, device: torch.device) -> BatchStream:
    t0 = time.perf_counter()
    dm = SSLDataModule(cfg, views=views, augment=augment)
    dm.setup("fit")
    log.info(
        "data %s (%s, %d view(s), in RAM: %s): set up in %.1f s",
        cfg.dataset, augment, views, dm.in_memory, time.perf_counter() - t0,
    )  # fmt: skip
    return BatchStream(dm, device)


def data_cases(
    img_size: int,
    batch: int,
    device: torch.device,
    embedded: bool,
    jpeg_images: int,
    jpeg_side: int,
    workers: int,
    seed: int,
    tmp_root: str | None = None,
) -> Iterator[Case]:
    """Data-pipeline cases; the JPEG folder lives in a temporary directory removed at the end."""
    if embedded:
        for views, augment in ((1, "mae"), (2, "mocov3")):
            cfg = DataConfig(
                dataset="fashion_mnist", img_size=img_size, batch_size=batch, seed=seed
            )
            stream = _stream(cfg, views, augment, device)
            yield Case(
                "data",
                f"data:fmnist:{augment}",
                f"Fashion-MNIST in RAM, {augment} aug, {views} view(s)",
                "batched on device",
                "-",
                batch,
                stream,
                flops=False,
                extra={"views": views, "augment": augment, "source": "fashion_mnist"},
            )
            del stream
    if jpeg_images <= 0:
        return
    with tempfile.TemporaryDirectory(prefix="moma-bench-jpeg-", dir=tmp_root) as tmp:
        t0 = time.perf_counter()
        write_jpegs(Path(tmp), jpeg_images, jpeg_side, seed)
        log.info(
            "wrote %d JPEGs of %d px in %.1f s", jpeg_images, jpeg_side, time.perf_counter() - t0
        )
        # At least 4 batches per pass, so epoch restarts do not dominate.
        fb = max(1, min(batch, jpeg_images // 4))
        for in_memory in (False, True):
            cfg = DataConfig(
                dataset=tmp,
                img_size=img_size,
                batch_size=fb,
                num_workers=workers,
                in_memory=in_memory,
                seed=seed,
            )
            stream = _stream(cfg, 1, "mae", device)
            how = (
                "decoded once into RAM, batched on device"
                if in_memory
                else (f"PIL per image, {workers} worker(s)")
            )
            yield Case(
                "data",
                f"data:jpeg:{'ram' if in_memory else 'stream'}",
                f"{jpeg_images} JPEGs {jpeg_side}px, mae aug",
                how,
                "-",
                fb,
                stream,
                flops=False,
                extra={"views": 1, "augment": "mae", "source": "jpeg", "in_memory": in_memory},
            )
            del stream
