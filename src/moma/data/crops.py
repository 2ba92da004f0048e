"""RandomResizedCrop of the original image, as uint8 crops made where it is decoded.

The crop parameters come from torchvision's own ``RandomResizedCrop.get_params`` (the draws
`moma.data.transforms` makes through ``v2.RandomResizedCrop`` today: same scale, same ratio
(3/4, 4/3), same ten tries and centre fallback), under a generator seeded per image, so an
image's crops depend on ``(seed, epoch, index)`` only, not on which worker made them. The
crop and resize are torchvision's ``resized_crop`` on the uint8 tensor (antialiased, bicubic
for MAE and bilinear for MoCo v3, as the recipes say). Only uint8 crops ``[V, 3, S, S]``
leave the worker: a quarter of the bytes of float views, and the float work (flip, colour,
normalisation) is done per batch on the training device (`moma.data.device_views`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torchvision.transforms import InterpolationMode, RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from moma.data.recipes import CROP_RATIO, ViewRecipe, view_recipes

Box = tuple[int, int, int, int]  # top, left, height, width in pixels of the original image


def sample_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (e.g. ``seed, epoch, index``)."""
    return int(np.random.SeedSequence([int(p) & (2**63 - 1) for p in parts]).generate_state(1)[0])


def center_box(height: int, width: int) -> Box:
    """The central square of the image (what resize-shorter-side + center-crop keeps)."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side, side


def resized_crop(img: Tensor, box: Box, size: int, bicubic: bool) -> Tensor:
    """Crop uint8 ``[3, H, W]`` (any device) to ``box`` and resize it to ``[3, S, S]``."""
    mode = InterpolationMode.BICUBIC if bicubic else InterpolationMode.BILINEAR
    return TF.resized_crop(img, *box, size=[size, size], interpolation=mode, antialias=True)


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

    def boxes(self, height: int, width: int, seed: int) -> list[Box]:
        """One crop box per view of a ``height x width`` image, drawn from ``seed``."""
        if self.recipes is None:
            return [center_box(height, width)] * self.views
        shape_only = torch.empty(()).expand(3, height, width)  # get_params reads the size
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return [
                tuple(
                    RandomResizedCrop.get_params(shape_only, list(r.crop_scale), list(CROP_RATIO))
                )
                for r in self.recipes
            ]

    def crops(self, img: Tensor, boxes: Sequence[Box]) -> Tensor:
        """uint8 ``[3, H, W]`` -> uint8 ``[V, 3, S, S]``, one crop per box."""
        return torch.stack(
            [resized_crop(img, box, self.img_size, self.bicubic(v)) for v, box in enumerate(boxes)]
        )


def make_cropper(augment: str, views: int, img_size: int, min_scale: float) -> ViewCropper:
    """The `ViewCropper` of a training augmentation (``mae``, ``mocov3`` or ``none``)."""
    recipes = None if augment == "none" else view_recipes(augment, views, min_scale)
    return ViewCropper(recipes, views, img_size)
