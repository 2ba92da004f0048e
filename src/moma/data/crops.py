"""RandomResizedCrop of the original image, as uint8 crops made where it is decoded.

The crop parameters follow torchvision's RandomResizedCrop (what `moma.data.transforms`
uses through ``v2.RandomResizedCrop``): area scale uniform in ``scale``, aspect ratio
log-uniform in (3/4, 4/3), sizes rounded, up to ten tries, then the largest central crop
within the ratio bounds. They are drawn with Python's ``random`` from a seed per image (a
tenth of the cost of torch's scalar ops), so an image's crops depend on ``(seed, epoch,
index)`` only, not on which worker made them (tests/test_data_stream.py compares the
distribution with torchvision's). The
crop and resize are torchvision's ``resized_crop`` on the uint8 tensor (antialiased, bicubic
for MAE and bilinear for MoCo v3, as the recipes say), and the horizontal flip (p=0.5, a
uint8 copy, cheaper here than on the batch). Only uint8 crops ``[V, 3, S, S]`` leave the
worker: a quarter of the bytes of float views; the float work (colour operations,
normalisation) is done per batch on the training device (`moma.data.device_views`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from moma.data.recipes import CROP_RATIO, ViewRecipe, view_recipes

Box = tuple[int, int, int, int]  # top, left, height, width in pixels of the original image


class ViewCrop(NamedTuple):
    """Where one view is cut from the original image, and whether it is mirrored."""

    box: Box
    flip: bool


def sample_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (e.g. ``seed, epoch, index``)."""
    return int(np.random.SeedSequence([int(p) & (2**63 - 1) for p in parts]).generate_state(1)[0])


_TRIES = 10


def fallback_crop_size(height: int, width: int) -> tuple[int, int]:
    """``(h, w)`` of RandomResizedCrop's fallback: the largest central crop whose aspect
    ratio lies within `CROP_RATIO`."""
    in_ratio = width / height
    if in_ratio < CROP_RATIO[0]:
        return round(width / CROP_RATIO[0]), width
    if in_ratio > CROP_RATIO[1]:
        return height, round(height * CROP_RATIO[1])
    return height, width


def random_resized_crop_box(
    height: int, width: int, scale: Sequence[float], rng: random.Random
) -> Box:
    """One RandomResizedCrop box of a ``height x width`` image (ratio bounds `CROP_RATIO`)."""
    area = height * width
    lo, hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    for _ in range(_TRIES):
        target = area * rng.uniform(scale[0], scale[1])
        ratio = math.exp(rng.uniform(lo, hi))
        w = round(math.sqrt(target * ratio))
        h = round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    h, w = fallback_crop_size(height, width)  # no try fitted
    return (height - h) // 2, (width - w) // 2, h, w


def center_box(height: int, width: int) -> Box:
    """The central square of the image (what resize-shorter-side + center-crop keeps)."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side, side


def resized_crop(img: Tensor, crop: ViewCrop, size: int, bicubic: bool) -> Tensor:
    """Cut ``crop`` from uint8 ``[3, H, W]`` (any device): ``[3, S, S]``, mirrored if asked."""
    mode = InterpolationMode.BICUBIC if bicubic else InterpolationMode.BILINEAR
    out = TF.resized_crop(img, *crop.box, size=[size, size], interpolation=mode, antialias=True)
    return out.flip(-1) if crop.flip else out


class ViewCropper:
    """The crop boxes and uint8 crops of every view of one image.

    Args:
        recipes: one `ViewRecipe` per view, or None for the deterministic evaluation
            geometry (the central square, resized) repeated ``views`` times.
        views: number of views.
        img_size: output side S.
    """

    def __init__(self, recipes: Sequence[ViewRecipe] | None, views: int, img_size: int) -> None:
        self.recipes = None if recipes is None else list(recipes)
        self.views, self.img_size = int(views), int(img_size)
        if self.recipes is not None and len(self.recipes) != self.views:
            raise ValueError(f"{len(self.recipes)} recipes for {views} views")

    def bicubic(self, view: int) -> bool:
        """Whether ``view`` is resized bicubically (else bilinearly)."""
        return self.recipes is not None and self.recipes[view].bicubic

    def boxes(self, height: int, width: int, seed: int) -> list[ViewCrop]:
        """One crop (box and flip, p=0.5) per view of a ``height x width`` image, drawn from
        ``seed``."""
        if self.recipes is None:
            return [ViewCrop(center_box(height, width), False)] * self.views
        rng = random.Random(seed)
        out = []
        for r in self.recipes:
            box = random_resized_crop_box(height, width, r.crop_scale, rng)
            out.append(ViewCrop(box, rng.random() < 0.5))
        return out

    def crops(self, img: Tensor, boxes: Sequence[ViewCrop]) -> Tensor:
        """uint8 ``[3, H, W]`` -> uint8 ``[V, 3, S, S]``, one crop per view."""
        return torch.stack(
            [resized_crop(img, box, self.img_size, self.bicubic(v)) for v, box in enumerate(boxes)]
        )


def make_cropper(augment: str, views: int, img_size: int, min_scale: float) -> ViewCropper:
    """The `ViewCropper` of a training augmentation (``mae``, ``mocov3`` or ``none``)."""
    recipes = None if augment == "none" else view_recipes(augment, views, min_scale)
    return ViewCropper(recipes, views, img_size)
