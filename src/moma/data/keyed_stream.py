"""Keyed views of image folders streamed from disk (the teacher-target cache on big data).

The in-RAM keyed views (`moma.data.keyed_views`) need every image in memory. A folder too
big for that is read in DataLoader workers instead, as the streamed path does
(`moma.data.crop_stream`): each worker decodes a file and cuts the uint8 crop of one view,
here a pure function of ``(seed, image index, view index)``. Sampler keys are
``(view, index)``: for training, the view image ``index`` uses in this epoch
(`view_schedule`); for the cache build, every view of every image. The batch carries the
indices and views through, so the targets can be looked up for exactly the crops made.

Shapes: N batch, S output side.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from moma.data.crop_stream import CropFileDataset
from moma.data.crops import ViewCropper, sample_seed
from moma.data.decode import decode_rgb
from moma.data.device_views import CropBatch
from moma.data.keyed_views import view_schedule
from moma.data.resumable import ResumableSampler

_KEYED_TAG = 0x6B657965  # keeps keyed crop seeds apart from the per-epoch streamed ones


@dataclass
class KeyedCropBatch(CropBatch):
    """A `CropBatch` of one view per image, with each image's ``index [N]`` and ``view [N]``."""

    index: Tensor
    view: Tensor


def collate_keyed_crops(items: Sequence[tuple[tuple[Tensor, int, int], int]]) -> KeyedCropBatch:
    """Worker items ``((uint8 [1, 3, S, S], index, view), label)`` -> a `KeyedCropBatch`."""
    parts, labels = zip(*items)
    crops, index, view = zip(*parts)
    return KeyedCropBatch(
        torch.stack(crops),
        torch.as_tensor(labels, dtype=torch.int64),
        torch.as_tensor(index, dtype=torch.int64),
        torch.as_tensor(view, dtype=torch.int64),
    )


class KeyedViewSampler(ResumableSampler):
    """`ResumableSampler` whose keys are ``(view, index)``: each image's view in this epoch."""

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        idx = list(super().__iter__())
        views = view_schedule(self.seed, self.epoch, torch.as_tensor(idx), self.dataset.views)
        return iter(zip(views.tolist(), idx))


class KeyedCropFileDataset(CropFileDataset):
    """Items ``((uint8 crop [1, 3, S, S], index, view), label)`` for keys ``(view, index)``.

    Args:
        files, labels: the images and their labels (-1 = unlabelled).
        cropper: a one-view cropper (the view's geometry).
        seed: the data seed; part of every crop's key.
        views: cached views per image, ``K``.
        strict: raise `DataError` on an unreadable file (else the next file stands in, with
            its own index, so its targets are looked up).
    """

    sampler_class = KeyedViewSampler

    def __init__(
        self,
        files: Sequence[str],
        labels: Sequence[int],
        cropper: ViewCropper,
        seed: int,
        views: int,
        strict: bool = False,
    ) -> None:
        super().__init__(files, labels, cropper, seed, strict, encoded=False)
        self.views = int(views)
        self.collate = collate_keyed_crops

    def index_of(self, key: tuple[int, int]) -> int:
        return int(key[1])

    def load(self, i: int, key: tuple[int, int]) -> tuple[Tensor, int, int]:
        view = int(key[0])
        img = decode_rgb(Path(self.files[i]).read_bytes())  # [3, H, W]
        seed = sample_seed(_KEYED_TAG, self.seed, i, view)
        crops = self.cropper.crops(img, self.cropper.boxes(img.shape[1], img.shape[2], seed))
        return crops, i, view  # crops: [1, 3, S, S]

    def describe(self, mean: Sequence[float], std: Sequence[float]) -> dict:
        """What determines the views (part of a target-cache key)."""
        r = self.cropper.recipes[0] if self.cropper.recipes else None
        return {
            "views": "keyed-uint8-crop-flip-v1",
            "crop_scale": list(r.crop_scale) if r else None,
            "bicubic": r.bicubic if r else None,
            "img_size": self.cropper.img_size,
            "mean": list(mean),
            "std": list(std),
            "seed": self.seed,
        }
