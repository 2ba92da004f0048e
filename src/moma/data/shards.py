"""Sharded tar datasets in WebDataset layout, streamed with the ``webdataset`` library.

Layout: each ``.tar`` shard holds samples as consecutive files sharing a key, e.g.
``n01440764_10026.jpg`` + ``n01440764_10026.cls`` (the class index as text; optional, -1
without). ``data.dataset`` names the shards: a path, a glob (``/data/train-*.tar``), a brace
pattern (``/data/train-{000000..000146}.tar``), several joined by ``::``, or URLs the
library opens (``pipe:aws s3 cp s3://bucket/train-000000.tar -``, ``https://...``).

Every epoch, each process (DDP rank) and each of its DataLoader workers reads its own slice
of a shard order shuffled from ``(seed, epoch)``, shuffles samples in a buffer, and yields
exactly its share: ``data.num_samples`` (counted from the local shards' tar headers when not
given) divided by ranks and workers, rounded down to whole batches, so every rank runs the
same number of steps. A worker that runs out of shards wraps around to its first one.
Samples are decoded and cropped as image folders are (`moma.data.crop_stream`).

Resume: a run resumed mid-epoch starts that epoch's stream over (the shard streams have no
random access); the steps and schedules continue exactly.
"""

from __future__ import annotations

import glob
import logging
import random
import tarfile
import warnings
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path

import braceexpand
import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from moma.data.crops import ViewCropper, sample_seed
from moma.data.decode import decode_rgb, image_size
from moma.data.device_views import collate_crops, collate_jpegs
from moma.errors import DataError

log = logging.getLogger(__name__)

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "ppm", "bmp", "tif", "tiff")
LABEL_KEY = "cls"
SHUFFLE_BUFFER = 2000  # samples each worker shuffles among (per epoch)
_REMOTE = ("pipe:", "http://", "https://", "gs://", "s3://", "ais://")


def is_shard_spec(dataset: str) -> bool:
    """Whether ``data.dataset`` names tar shards rather than an image folder."""
    parts = str(dataset).split("::")
    return all(p.strip().endswith(".tar") or p.strip().startswith(_REMOTE) for p in parts)


def expand_shards(spec: str) -> list[str]:
    """The shard list of a spec: ``::``-joined parts, brace patterns and globs expanded.

    Raises:
        DataError: a part that matches no file.
    """
    shards: list[str] = []
    for part in str(spec).split("::"):
        for name in braceexpand.braceexpand(part.strip()):
            if name.startswith(_REMOTE):
                shards.append(name)
                continue
            path = str(Path(name).expanduser())
            found = sorted(glob.glob(path)) if glob.has_magic(path) else [path]
            found = [f for f in found if Path(f).is_file()]
            if not found:
                raise DataError(f"data.dataset {spec!r}: no tar shard matches {name!r}")
            shards.extend(found)
    if not shards:
        raise DataError(f"data.dataset {spec!r}: names no tar shards")
    return shards


def sample_key(member: str) -> tuple[str, str]:
    """``(key, extension)`` of a file in a shard, as WebDataset groups them."""
    key, ext = wds.tariterators.base_plus_ext(member)
    return (key or member), (ext or "").lower()


def count_samples(shards: Sequence[str]) -> int:
    """Samples with an image in local shards (reads the tar headers only).

    Raises:
        DataError: a remote shard (give ``data.num_samples``) or an unreadable tar file.
    """
    total = 0
    for shard in shards:
        if shard.startswith(_REMOTE):
            raise DataError(
                f"{shard}: cannot count the samples of remote shards: give data.num_samples"
            )
        try:
            with tarfile.open(shard, "r:") as tar:
                keys = {sample_key(m.name)[0] for m in tar if sample_key(m.name)[1] in IMAGE_KEYS}
        except (OSError, tarfile.TarError) as err:
            raise DataError(f"{shard}: not a readable tar shard ({err})") from err
        total += len(keys)
    return total


def _warn_and_go_on(err: Exception) -> bool:
    warnings.warn(f"skipping part of a shard: {err!r}", stacklevel=2)
    return True


class ShardDataset(IterableDataset):
    """Training items from tar shards: ``(uint8 crops [V, 3, S, S], label)``, or with
    ``encoded`` ``((bytes, boxes, name), label)`` (see `moma.data.crop_stream`).

    Args:
        shards: shard paths or URLs (`expand_shards`).
        num_samples: samples in all shards together.
        cropper: the views' crop recipes.
        seed: seed of the shard order, the shuffle buffers and the crops.
        batch_size: per-process batch (each worker yields whole batches).
        num_workers: DataLoader workers of each process (0 = the process itself).
        rank, world_size: this process among the DDP processes.
        strict: a bad sample or shard raises `DataError` instead of being skipped.
        encoded: leave JPEG pixels to the device.
    """

    def __init__(
        self,
        shards: Sequence[str],
        num_samples: int,
        cropper: ViewCropper,
        seed: int,
        batch_size: int,
        num_workers: int,
        rank: int = 0,
        world_size: int = 1,
        strict: bool = False,
        encoded: bool = False,
    ) -> None:
        self.shards, self.num_samples = list(shards), int(num_samples)
        self.cropper, self.seed, self.batch_size = cropper, int(seed), int(batch_size)
        self.workers = max(1, int(num_workers))
        self.rank, self.world_size = int(rank), int(world_size)
        self.strict, self.encoded = strict, encoded
        self.collate = collate_jpegs if encoded else collate_crops
        self.per_worker = self.num_samples // self.world_size // self.workers
        self.per_worker -= self.per_worker % self.batch_size
        if self.per_worker < 1:
            raise DataError(
                f"{len(self.shards)} shard(s) with {num_samples} samples: fewer than one batch "
                f"of {batch_size} per worker ({self.workers}) and process ({world_size})"
            )
        streams = self.world_size * self.workers
        if len(self.shards) < streams:
            warnings.warn(
                f"{len(self.shards)} shard(s) for {streams} reading streams (processes x "
                "workers): some streams read the same shards; more shards spread them",
                stacklevel=2,
            )
        self._skipped = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._epoch = 0  # counted per process: workers keep theirs (persistent workers)

    @property
    def num_skipped(self) -> int:
        """Samples skipped as unreadable so far, all workers included."""
        return int(self._skipped.item())

    def __len__(self) -> int:
        """Samples this process yields per epoch (whole batches per worker)."""
        return self.per_worker * self.workers

    def _shard_urls(self, epoch: int, stream: int, streams: int) -> Iterator[dict]:
        """This reading stream's shards, in an order shuffled per pass, endlessly."""
        for cycle in range(1 << 30):
            order = list(self.shards)
            random.Random(sample_seed(self.seed, epoch, cycle)).shuffle(order)
            mine = order[stream::streams] or [order[stream % len(order)]]
            for url in mine:
                yield {"url": url}

    def __iter__(self) -> Iterator:
        info = get_worker_info()
        worker = 0 if info is None else info.id
        epoch, self._epoch = self._epoch, self._epoch + 1
        stream = self.rank * self.workers + worker
        streams = self.world_size * self.workers
        rng = random.Random(sample_seed(self.seed, epoch, stream, 1))
        buffer = min(SHUFFLE_BUFFER, self.per_worker)
        handler = wds.reraise_exception if self.strict else _warn_and_go_on
        pipeline = wds.DataPipeline(
            lambda: self._shard_urls(epoch, stream, streams),
            wds.tarfile_to_samples(handler=handler),
            # a buffer no larger than this worker's share: a small dataset is not read
            # many times over before its first sample comes out
            wds.shuffle(buffer, initial=buffer, rng=rng),
        )
        items = (self._item(s, rng.getrandbits(63)) for s in pipeline)
        return islice((it for it in items if it is not None), self.per_worker)

    def _item(self, sample: dict, seed: int):
        name = f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"
        image_key = next((k for k in IMAGE_KEYS if k in sample), None)
        try:
            if image_key is None:
                raise ValueError(f"no image file (looked for .{', .'.join(IMAGE_KEYS)})")
            data = sample[image_key]
            label = int(sample[LABEL_KEY].decode().strip()) if LABEL_KEY in sample else -1
            if self.encoded:
                height, width = image_size(data)
                return (data, self.cropper.boxes(height, width, seed), name), label
            img = decode_rgb(data)  # [3, H, W]
            crops = self.cropper.crops(img, self.cropper.boxes(img.shape[1], img.shape[2], seed))
            return crops, label
        except Exception as err:
            if self.strict:
                raise DataError(f"{name}: unreadable sample ({err})") from err
            self._skipped += 1
            warnings.warn(f"skipping unreadable sample {name}: {err}", stacklevel=2)
            return None
