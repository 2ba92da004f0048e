"""Augmented views as a pure function of ``(seed, image index, view index)``.

The teacher-target cache stores each teacher's output on ``K`` views of every image and
later trains the student on exactly those views, so a view must be regenerated bit for bit
from its key alone, whatever batch it lands in, on any rank, after any resume. Random
draws therefore come from a counter-based generator (splitmix64 of the key and a draw
counter) instead of a stateful ``torch.Generator``; the geometry is the batched
RandomResizedCrop + flip of `moma.data.batch_augment`, applied per image.

Shapes: N images, C in {1, 3} stored channels, h, w stored size, S output side.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from moma.data.batch_augment import (
    CROP_TRIES,
    crop_boxes,
    crop_resize_flip,
    normalize,
    resize_square,
    to_rgb,
    to_unit_float,
)
from moma.data.recipes import CROP_RATIO, ViewRecipe
from moma.errors import ConfigError

_M64 = 0xFFFFFFFFFFFFFFFF
_GOLDEN = 0x9E3779B97F4A7C15
# Independent streams of draws per key: the view's geometry, and which view an epoch uses.
STREAM_VIEW, STREAM_SCHEDULE = 1, 2
# Draws of one view: crop area (tries), aspect ratio (tries), box y, box x, flip.
_DRAWS = 2 * CROP_TRIES + 3


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def keyed_uniforms(
    seed: int, index: np.ndarray, view: np.ndarray, count: int, stream: int
) -> np.ndarray:
    """``count`` uniforms in [0, 1) per key ``(seed, stream, index[i], view[i])``: ``[N, count]``.

    The same key always gives the same numbers (float64, 53 random bits each).
    """
    index = np.asarray(index, dtype=np.int64).astype(np.uint64)
    view = np.asarray(view, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        base = np.uint64((int(seed) * _GOLDEN + int(stream)) & _M64)
        key = _mix(_mix(_mix(np.full_like(index, base)) + index) + view)  # [N]
        counter = np.arange(1, count + 1, dtype=np.uint64) * np.uint64(_GOLDEN)  # [count]
        bits = _mix(key[:, None] + counter[None, :])  # [N, count]
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def view_schedule(seed: int, epoch: int, index: Tensor, views: int) -> Tensor:
    """Which of its ``views`` cached views image ``index[i]`` uses in ``epoch``: ``[N]`` int64.

    Each image cycles through all its views, one per epoch, from its own random start, so
    every view is used once in any ``views`` consecutive epochs.
    """
    idx = index.detach().cpu().numpy()
    start = keyed_uniforms(seed, idx, np.zeros_like(idx), 1, STREAM_SCHEDULE)[:, 0]
    picked = (np.floor(start * views).astype(np.int64) + int(epoch)) % int(views)
    return torch.from_numpy(picked).to(index.device)


class KeyedViews:
    """uint8 images + their keys -> normalised float views ``[N, 3, S, S]``, deterministically.

    Args:
        recipe: the view's geometry (RandomResizedCrop scale, bicubic); ``None`` = resize only.
            Colour operations are not supported (MOMA's views are crop + flip).
        img_size: output side S.
        mean, std: normalisation, 3 values each.
        seed: the data seed; part of every key.
    """

    def __init__(
        self,
        recipe: ViewRecipe | None,
        img_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        seed: int,
    ) -> None:
        if recipe is not None and (recipe.jitter_p or recipe.gray_p or recipe.blur_p):
            raise ConfigError(
                "cached teacher targets regenerate crop + flip views only (augment 'mae' or "
                "'none'); colour augmentations cannot be cached"
            )
        if recipe is not None and recipe.solarize_p:
            raise ConfigError("cached teacher targets do not support solarised views")
        self.recipe, self.img_size, self.seed = recipe, int(img_size), int(seed)
        self.mean, self.std = tuple(mean), tuple(std)

    def describe(self) -> dict:
        """What determines the views (part of a cache key)."""
        r = self.recipe
        return {
            "views": "keyed-crop-flip-v1",
            "crop_scale": list(r.crop_scale) if r else None,
            "crop_ratio": list(CROP_RATIO),
            "bicubic": r.bicubic if r else None,
            "img_size": self.img_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "seed": self.seed,
        }

    def __call__(self, images: Tensor, index: Tensor, view: Tensor) -> Tensor:
        """Views of uint8 ``images [N, C, h, w]`` with keys ``index [N]``, ``view [N]``."""
        x = to_unit_float(images)  # [N, C, h, w]
        if self.recipe is None:
            return normalize(to_rgb(resize_square(x, self.img_size)), self.mean, self.std)
        n, _, height, width = x.shape
        u = keyed_uniforms(
            self.seed, index.cpu().numpy(), view.cpu().numpy(), _DRAWS, STREAM_VIEW
        )  # [N, draws]
        u = torch.from_numpy(u).to(device=x.device, dtype=torch.float32)
        t = CROP_TRIES
        lo, hi = self.recipe.crop_scale
        target = float(height * width) * (lo + (hi - lo) * u[:, :t])  # [N, tries]
        log_lo, log_hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
        ratio = torch.exp(log_lo + (log_hi - log_lo) * u[:, t : 2 * t])  # [N, tries]
        boxes = crop_boxes(target, ratio, u[:, 2 * t], u[:, 2 * t + 1], height, width)
        flip = u[:, 2 * t + 2] < 0.5  # [N]
        x = crop_resize_flip(x, boxes, flip, self.img_size, self.recipe.bicubic)  # [N, C, S, S]
        return normalize(to_rgb(x), self.mean, self.std)
