"""The data pipeline alone: how many training images per second it can deliver.

A step fetches the next batch from ``SSLDataModule.train_dataloader()`` (a new epoch starts
when one ends), moves it to the device and runs ``on_after_batch_transfer``, exactly what a
Lightning training loop does before ``training_step``. Three sources:

- the embedded Fashion-MNIST (in RAM: uint8 batches, augmented on the device as a batch);
- a folder of JPEGs streamed from disk: PIL decode + per-image torchvision v2 in workers
  (``decode=pil``); torchvision decode + uint8 crops in the workers, float work batched on
  the device (``decode=workers``); JPEG bytes decoded on the device in one batched call
  (``decode=device``; on a CPU that is the main process);
- the same JPEGs as WebDataset tar shards (``decode=workers``);
- the same folder decoded into RAM once, then augmented as a batch.

Streams also count the CPU time of every process involved (this one and its DataLoader
workers), so a row tells images per CPU-second, the figure that scales with cores.
"""

from __future__ import annotations

import logging
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from PIL import Image

from moma.bench.cases import Case
from moma.data import DataConfig, SSLDataModule
from moma.threads import own_cpu_seconds

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


def write_shards(folder: Path, images: list[Path], per_shard: int) -> str:
    """Pack ``images`` into WebDataset tar shards of ``per_shard`` samples (``key.jpg``);
    returns the brace pattern naming them."""
    folder.mkdir(parents=True, exist_ok=True)
    count = (len(images) + per_shard - 1) // per_shard
    for s in range(count):
        with tarfile.open(folder / f"shard-{s:04d}.tar", "w") as tar:
            for path in images[s * per_shard : (s + 1) * per_shard]:
                tar.add(path, arcname=path.name)
    return str(folder / f"shard-{{0000..{count - 1:04d}}}.tar")


class BatchStream:
    """Endless training batches of a datamodule, each moved to the device and finished by
    ``on_after_batch_transfer`` (the in-RAM augmentation, or the streamed crops' views).

    Records each call's wall time and the CPU time of this process and its workers."""

    def __init__(self, dm: SSLDataModule, device: torch.device, batch: int) -> None:
        self.dm, self.device, self.batch = dm, device, batch
        self.loader = dm.train_dataloader()
        self.it = iter(self.loader)
        self.calls: list[tuple[float, float]] = []  # (wall s, CPU s of all processes)

    def _next(self):
        try:
            return next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            return next(self.it)

    def __call__(self):
        c0, t0 = own_cpu_seconds(), time.perf_counter()
        batch = move_data_to_device(self._next(), self.device)
        out = self.dm.on_after_batch_transfer(batch, 0)
        self.calls.append((time.perf_counter() - t0, own_cpu_seconds() - c0))
        return out

    def cpu_summary(self, last: int) -> dict:
        """Over the last ``last`` calls: overall images/s, CPU cores busy (all processes) and
        images per CPU-second."""
        wall = sum(w for w, _ in self.calls[-last:])
        cpu = sum(c for _, c in self.calls[-last:])
        images = self.batch * min(last, len(self.calls))
        return {
            "images_per_s_overall": images / wall if wall > 0 else None,
            "cpu_cores_all": cpu / wall if wall > 0 else None,
            "images_per_cpu_s": images / cpu if cpu > 0 else None,
        }


def _stream(cfg: DataConfig, views: int, augment: str, device: torch.device) -> BatchStream:
    t0 = time.perf_counter()
    dm = SSLDataModule(cfg, views=views, augment=augment)
    dm.setup("fit")
    log.info(
        "data %s (%s, %d view(s), in RAM: %s): set up in %.1f s",
        cfg.dataset, augment, views, dm.in_memory, time.perf_counter() - t0,
    )  # fmt: skip
    return BatchStream(dm, device, cfg.batch_size)


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
        paths = write_jpegs(Path(tmp) / "jpegs", jpeg_images, jpeg_side, seed)
        # At least 4 batches per pass, so epoch restarts do not dominate.
        fb = max(1, min(batch, jpeg_images // 4))
        shards = write_shards(Path(tmp) / "shards", paths, max(fb, jpeg_images // 8))
        log.info(
            "wrote %d JPEGs of %d px (and shards) in %.1f s",
            jpeg_images, jpeg_side, time.perf_counter() - t0,
        )  # fmt: skip
        name = f"{jpeg_images} JPEGs {jpeg_side}px, mae aug"
        folder = str(Path(tmp) / "jpegs")
        ways = [  # key, dataset, decode, in RAM, how
            ("data:jpeg:stream", folder, "pil", False, f"PIL per image, {workers} worker(s)"),
            ("data:jpeg:workers", folder, "workers", False,
             f"torchvision decode + uint8 crop in {workers} worker(s), float ops batched"),
            ("data:jpeg:device", folder, "device", False,
             "JPEG bytes decoded batched on the device"),
            ("data:shards:workers", shards, "workers", False,
             f"WebDataset shards, uint8 crops in {workers} worker(s)"),
            ("data:jpeg:ram", folder, "auto", True, "decoded once into RAM, batched on device"),
        ]  # fmt: skip
        for key, dataset, decode, in_memory, how in ways:
            cfg = DataConfig(
                dataset=dataset,
                img_size=img_size,
                batch_size=fb,
                num_workers=workers,
                in_memory=in_memory,
                seed=seed,
                decode=decode,
            )
            stream = _stream(cfg, 1, "mae", device)
            yield Case(
                "data",
                key,
                name,
                how,
                "-",
                fb,
                stream,
                flops=False,
                extra={
                    "views": 1,
                    "augment": "mae",
                    "source": "jpeg",
                    "in_memory": in_memory,
                    "decode": decode,
                },  # fmt: skip
            )
            del stream
