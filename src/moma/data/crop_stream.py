"""Image folders streamed from disk for a training device: torchvision decoders, uint8 crops.

`CropFileDataset` reads each file in a DataLoader worker and, with ``encoded=False``, decodes
it there (torchvision's libjpeg-turbo / libpng / libwebp, PIL for the other formats) and
cuts each view's RandomResizedCrop from the original image (`moma.data.crops`); with
``encoded=True`` it only reads the header for the crop boxes and leaves the JPEG bytes to be
decoded on the device in one batched call. Either way the float work happens per batch on
the device (`moma.data.device_views.DeviceViews`).

Its items are keyed by ``(epoch, index)`` (`EpochIndexSampler`): the crops of an image are a
function of ``(seed, epoch, index)``, so they do not depend on worker count or scheduling,
and a run resumed mid-epoch crops its remaining images as the uninterrupted run would.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from moma.data.crops import ViewCropper, sample_seed
from moma.data.decode import decode_rgb, image_size
from moma.data.device_views import collate_crops, collate_jpegs
from moma.data.file_dataset import ImageFileDataset
from moma.data.resumable import ResumableSampler


class EpochIndexSampler(ResumableSampler):
    """`ResumableSampler` whose keys are ``(epoch, index)``: the epoch reaches the workers."""

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        epoch = self.epoch
        return ((epoch, i) for i in super().__iter__())


class CropFileDataset(ImageFileDataset):
    """Items ``(uint8 crops [V, 3, S, S], label)``, or with ``encoded`` ``((bytes, boxes,
    path), label)``; unreadable files are skipped (or raise, ``strict``) as in
    `ImageFileDataset`.

    Args:
        files, labels: the images and their labels (-1 = unlabelled).
        cropper: the views' crop recipes.
        seed: seed of the per-image crop parameters.
        strict: raise `DataError` on an unreadable file.
        encoded: leave the pixels to the device (the worker reads the header only).
    """

    sampler_class = EpochIndexSampler

    def __init__(
        self,
        files: Sequence[str],
        labels: Sequence[int],
        cropper: ViewCropper,
        seed: int,
        strict: bool = False,
        encoded: bool = False,
    ) -> None:
        super().__init__(files, labels, None, strict)
        self.cropper, self.seed, self.encoded = cropper, int(seed), encoded
        self.collate = collate_jpegs if encoded else collate_crops

    def index_of(self, key: tuple[int, int]) -> int:
        return int(key[1])

    def load(self, i: int, key: tuple[int, int]):
        data = Path(self.files[i]).read_bytes()
        seed = sample_seed(self.seed, key[0], i)
        if self.encoded:
            height, width = image_size(data)  # also refuses files that are no image at all
            return data, self.cropper.boxes(height, width, seed), self.files[i]
        img = decode_rgb(data)  # [3, H, W]
        return self.cropper.crops(img, self.cropper.boxes(img.shape[1], img.shape[2], seed))


def resolve_decode(mode: str, device: torch.device | str) -> str:
    """``data.decode`` made concrete: ``auto`` is ``device`` on a GPU, else ``workers``."""
    if mode == "auto":
        return "device" if torch.device(device).type == "cuda" else "workers"
    return mode
