"""Streamed training batches finished on the training device, one whole batch at a time.

The DataLoader workers of the streaming paths (`moma.data.crop_stream`, `moma.data.shards`)
deliver either uint8 crops (`CropBatch`: decoded and cropped in the workers) or still
encoded JPEGs with their crop boxes (`JpegBatch`: decoded here, in one batched call, nvjpeg
on a GPU). `DeviceViews` turns either into normalised float views on the device: colour
operations and normalisation per batch, as the in-RAM path (`moma.data.batch_augment`)
does, with per-image random parameters from a generator the datamodule re-seeds for every
batch (the crop and the flip were drawn per image with the crop box).

Shapes: N batch, V views, S output side.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from moma.data.batch_augment import normalize, to_unit_float
from moma.data.color_ops import apply_color_recipe
from moma.data.crops import ViewCrop, ViewCropper, resized_crop
from moma.data.decode import decode_many
from moma.data.generators import DeviceGenerators
from moma.data.recipes import ViewRecipe
from moma.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class CropBatch:
    """Images cropped in the workers: uint8 ``crops [N, V, 3, S, S]``, ``labels [N]``."""

    crops: Tensor
    labels: Tensor


@dataclass
class JpegBatch:
    """Images still encoded: the files' bytes as uint8 numpy arrays and each view's crop box
    as plain ints (neither moves when Lightning moves the batch to the device: the decoders
    read the bytes from the host), ``labels [N]`` and the images' names (for messages)."""

    data: list[np.ndarray]
    boxes: list[list[ViewCrop]]
    labels: Tensor
    names: list[str]


def collate_crops(items: Sequence[tuple[Tensor, int]]) -> CropBatch:
    """Worker items ``(uint8 [V, 3, S, S], label)`` -> one `CropBatch`."""
    crops, labels = zip(*items)
    return CropBatch(torch.stack(crops), torch.as_tensor(labels, dtype=torch.int64))


def collate_jpegs(items: Sequence[tuple[tuple[bytes, list[ViewCrop], str], int]]) -> JpegBatch:
    """Worker items ``((bytes, boxes, name), label)`` -> one `JpegBatch`."""
    encoded, labels = zip(*items)
    data, boxes, names = zip(*encoded)
    arrays = [np.frombuffer(bytearray(d), dtype=np.uint8) for d in data]  # writable
    labels_t = torch.as_tensor(labels, dtype=torch.int64)
    return JpegBatch(arrays, [list(b) for b in boxes], labels_t, list(names))


class DeviceViews(DeviceGenerators):
    """`CropBatch` / `JpegBatch` -> ``(views, labels)`` on the batch's device: one view
    ``[N, 3, S, S]``, or a list of ``V`` of them.

    Args:
        cropper: the views' crop recipes (None recipes: no flip, no colour: evaluation-like).
        mean, std: the normalisation.
        seed: seed of the per-device generators (re-seeded per batch by `reseed`).
        strict: an undecodable image raises `DataError` instead of being replaced.
    """

    def __init__(
        self,
        cropper: ViewCropper,
        mean: Sequence[float],
        std: Sequence[float],
        seed: int = 0,
        strict: bool = False,
    ) -> None:
        self.cropper, self.mean, self.std = cropper, tuple(mean), tuple(std)
        self.seed, self.strict = int(seed), strict
        self.num_skipped = 0

    def __call__(self, batch: CropBatch | JpegBatch) -> tuple[Tensor | list[Tensor], Tensor]:
        device = batch.labels.device
        crops = batch.crops if isinstance(batch, CropBatch) else self.decode(batch, device)
        recipes = self.cropper.recipes
        views = [
            self.finish(crops[:, v], None if recipes is None else recipes[v])
            for v in range(crops.shape[1])
        ]
        return (views[0] if len(views) == 1 else views), batch.labels

    def finish(self, images: Tensor, recipe: ViewRecipe | None) -> Tensor:
        """uint8 crops ``[N, 3, S, S]`` (already flipped) -> colour-augmented, normalised."""
        if (
            recipe is None
            or recipe.jitter_p + recipe.gray_p + recipe.blur_p + recipe.solarize_p == 0
        ):
            return self._normalize_uint8(images)
        gen = self.generator(images.device)
        x = apply_color_recipe(to_unit_float(images), recipe, gen, self.cropper.img_size)
        return normalize(x, self.mean, self.std)

    def _normalize_uint8(self, images: Tensor) -> Tensor:
        """``(images / 255 - mean) / std`` in two passes over the float batch."""
        dev = images.device
        scale = 1.0 / (255.0 * torch.tensor(self.std, device=dev)).view(1, -1, 1, 1)
        shift = torch.tensor(self.mean, device=dev) / torch.tensor(self.std, device=dev)
        return images.to(torch.float32).mul_(scale).sub_(shift.view(1, -1, 1, 1))

    def decode(self, batch: JpegBatch, device: torch.device) -> Tensor:
        """Decode the batch on ``device`` and crop each view: uint8 ``[N, V, 3, S, S]``.

        An undecodable image is replaced by the batch's first good one (with a warning),
        or raises `DataError` when ``strict``.
        """
        imgs = decode_many(batch.data, device)
        good = next((i for i, img in enumerate(imgs) if img is not None), None)
        for i, img in enumerate(imgs):
            if img is not None:
                continue
            if self.strict or good is None:
                raise DataError(f"{batch.names[i]}: unreadable image (decoding failed)")
            self.num_skipped += 1
            warnings.warn(f"skipping unreadable image {batch.names[i]}", stacklevel=2)
        s, v = self.cropper.img_size, self.cropper.views
        out = torch.empty(len(imgs), v, 3, s, s, dtype=torch.uint8, device=device)
        for i, img in enumerate(imgs):
            src = i if img is not None else good
            for k, box in enumerate(batch.boxes[src]):
                out[i, k] = resized_crop(imgs[src], box, s, self.cropper.bicubic(k))
        return out
