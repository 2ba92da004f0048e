"""Batched augmentation of uint8 image batches on their device (the in-RAM fast path).

Every image gets its own random parameters (crop box, flip, jitter factors and order, ...);
the work is done for the whole batch at once: the crop, resize and flip are one
``affine_grid`` + ``grid_sample`` with a per-image affine matrix, the blur one grouped
convolution with a per-image kernel. The recipes follow torchvision's RandomResizedCrop and
the colour operations of `moma.data.color_ops` (see `moma.data.recipes`).

Shapes: N batch, C in {1, 3} stored channels, h, w stored size, S output side.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from moma.data.color_ops import apply_color_recipe
from moma.data.crops import fallback_crop_size
from moma.data.generators import DeviceGenerators
from moma.data.recipes import CROP_RATIO, ViewRecipe, view_recipes

CROP_TRIES = 10


def to_unit_float(images: Tensor) -> Tensor:
    """uint8 ``[N, C, h, w]`` -> float32 in [0, 1]."""
    return images.to(torch.float32).div_(255.0)


def to_rgb(x: Tensor) -> Tensor:
    """``[N, 1 or 3, H, W]`` -> ``[N, 3, H, W]`` (a copy when grayscale is repeated)."""
    return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x


def resize_square(x: Tensor, size: int) -> Tensor:
    """Bilinear (antialiased) resize of float ``[N, C, h, w]`` to ``[N, C, S, S]``."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """``(x - mean) / std`` per channel of float ``[N, 3, H, W]``."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def random_crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    generator: torch.Generator,
    device: torch.device,
) -> Tensor:
    """Per-image RandomResizedCrop boxes ``[N, 4]`` as ``(x0, y0, w, h)`` in pixels.

    Same sampling as torchvision (10 tries of area scale and log-uniform aspect ratio,
    integer sizes, then a center crop fallback), vectorised over the batch.
    """
    area = float(height * width)
    target = area * torch.empty(n, CROP_TRIES, device=device).uniform_(*scale, generator=generator)
    log_r = torch.empty(n, CROP_TRIES, device=device).uniform_(
        math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]), generator=generator
    )
    u_y = torch.rand(n, generator=generator, device=device)
    u_x = torch.rand(n, generator=generator, device=device)
    return crop_boxes(target, torch.exp(log_r), u_y, u_x, height, width)


def crop_boxes(
    target: Tensor, ratio: Tensor, u_y: Tensor, u_x: Tensor, height: int, width: int
) -> Tensor:
    """RandomResizedCrop boxes ``[N, 4]`` ``(x0, y0, w, h)`` from its random draws.

    Args:
        target: crop areas in pixels ``[N, tries]``; ``ratio``: aspect ratios ``[N, tries]``.
        u_y, u_x: uniforms in [0, 1) ``[N]`` placing the box (torchvision's ``randint``).
        height, width: the image size.
    The first try whose integer box fits wins; none fitting gives the center-crop fallback.
    """
    w = torch.round(torch.sqrt(target * ratio))
    h = torch.round(torch.sqrt(target / ratio))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)  # [N, tries]
    first = torch.argmax(ok.to(torch.int8), dim=1, keepdim=True)  # first valid try
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)
    y0 = torch.floor(u_y * (height - h + 1))
    x0 = torch.floor(u_x * (width - w + 1))
    # Fallback (no valid try): the largest center crop within the ratio bounds.
    fh, fw = fallback_crop_size(height, width)
    none_ok = ~ok.any(dim=1)
    w = torch.where(none_ok, torch.full_like(w, fw), w)
    h = torch.where(none_ok, torch.full_like(h, fh), h)
    x0 = torch.where(none_ok, torch.full_like(x0, (width - fw) // 2), x0)
    y0 = torch.where(none_ok, torch.full_like(y0, (height - fh) // 2), y0)
    return torch.stack([x0, y0, w, h], dim=1)


def crop_resize_flip(x: Tensor, boxes: Tensor, flip: Tensor, size: int, bicubic: bool) -> Tensor:
    """Crop each image to its box, resize to ``size`` and mirror where ``flip`` is true.

    Args:
        x: float ``[N, C, h, w]``.
        boxes: ``[N, 4]`` ``(x0, y0, w, h)`` in pixels of ``x``.
        flip: bool ``[N]``.
        size: output side S.
        bicubic: bicubic (clamped to the input range) instead of bilinear interpolation.

    Returns:
        float ``[N, C, S, S]``.
    """
    n, c, height, width = x.shape
    x0, y0, bw, bh = boxes.to(x.dtype).unbind(1)
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    # Output coords in [-1, 1] (pixel edges, align_corners=False) -> input coords.
    theta[:, 0, 0] = torch.where(flip, -bw / width, bw / width)
    theta[:, 0, 2] = (2.0 * x0 + bw) / width - 1.0
    theta[:, 1, 1] = bh / height
    theta[:, 1, 2] = (2.0 * y0 + bh) / height - 1.0
    grid = F.affine_grid(theta, [n, c, size, size], align_corners=False)
    mode = "bicubic" if bicubic else "bilinear"
    out = F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=False)
    return out.clamp_(0.0, 1.0) if bicubic else out


class BatchAugment(DeviceGenerators):
    """Turns a uint8 batch ``[N, C, h, w]`` into normalised float view(s) ``[N, 3, S, S]``.

    Args:
        augment: ``"mae"``, ``"mocov3"`` or ``"none"`` (resize + normalise only).
        views: 1 (returns a tensor) or 2 (returns a list of two tensors).
        img_size: output side S.
        min_scale: crop area lower bound for ``"mae"``.
        mean, std: normalisation, 3 values each.
        seed: seed of the generator(s) drawing the per-image parameters (one per device).
    """

    def __init__(
        self,
        augment: str,
        views: int,
        img_size: int,
        min_scale: float,
        mean: Sequence[float],
        std: Sequence[float],
        seed: int = 0,
    ) -> None:
        self.augment, self.views, self.img_size = augment, views, img_size
        self.mean, self.std, self.seed = tuple(mean), tuple(std), seed
        self.recipes = [] if augment == "none" else view_recipes(augment, views, min_scale)

    def view(self, images: Tensor, recipe: ViewRecipe | None) -> Tensor:
        """One normalised float view ``[N, 3, S, S]`` of uint8 ``images``."""
        x = to_unit_float(images)  # [N, C, h, w]
        if recipe is None:
            return normalize(to_rgb(resize_square(x, self.img_size)), self.mean, self.std)
        gen = self.generator(images.device)
        n, _, height, width = x.shape
        boxes = random_crop_boxes(n, height, width, recipe.crop_scale, gen, x.device)
        flip = torch.rand(n, generator=gen, device=x.device) < 0.5
        x = crop_resize_flip(x, boxes, flip, self.img_size, recipe.bicubic)  # [N, C, S, S]
        x = apply_color_recipe(to_rgb(x), recipe, gen, self.img_size)
        return normalize(x, self.mean, self.std)

    def __call__(self, images: Tensor) -> Tensor | list[Tensor]:
        """Augment uint8 ``[N, C, h, w]`` (C = 1 or 3): a tensor for one view, else a list."""
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                f"expected uint8 images [N, 1 or 3, H, W], got {images.dtype} {list(images.shape)}"
            )
        if self.augment == "none":
            one = self.view(images, None)
            out = [one] + [one.clone() for _ in range(self.views - 1)]
        else:
            out = [self.view(images, r) for r in self.recipes]
        return out[0] if self.views == 1 else out
