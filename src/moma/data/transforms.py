"""Per-image torchvision v2 pipelines, for image folders streamed from disk (PIL in workers)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image, ImageFilter
from torchvision.transforms import InterpolationMode, v2

from moma.data.recipes import (
    CROP_RATIO,
    MOCOV3_JITTER,
    SOLARIZE_THRESHOLD,
    ViewRecipe,
    blur_sigma,
    view_recipes,
)


def _to_normalized(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]


def eval_geometry(img_size: int) -> v2.Compose:
    """Deterministic resize of the shorter side to ``img_size`` + center crop (PIL in, PIL out)."""
    return v2.Compose([v2.Resize(img_size, antialias=True), v2.CenterCrop(img_size)])


def eval_transform(img_size: int, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """PIL RGB image -> normalised float ``[3, S, S]``: resize + center crop, no randomness."""
    return v2.Compose([eval_geometry(img_size), *_to_normalized(mean, std)])


def view_transform(
    recipe: ViewRecipe, img_size: int, mean: Sequence[float], std: Sequence[float]
) -> v2.Compose:
    """PIL RGB image -> one augmented, normalised float view ``[3, S, S]``."""
    interp = InterpolationMode.BICUBIC if recipe.bicubic else InterpolationMode.BILINEAR
    ops: list[v2.Transform] = [
        v2.RandomResizedCrop(
            img_size, scale=recipe.crop_scale, ratio=CROP_RATIO, interpolation=interp
        ),
        v2.RandomHorizontalFlip(),
    ]
    if recipe.jitter_p > 0:
        ops.append(v2.RandomApply([v2.ColorJitter(*MOCOV3_JITTER)], p=recipe.jitter_p))
    if recipe.gray_p > 0:
        ops.append(v2.RandomGrayscale(p=recipe.gray_p))
    if recipe.blur_p > 0:
        ops.append(v2.RandomApply([PILGaussianBlur(blur_sigma(img_size))], p=recipe.blur_p))
    if recipe.solarize_p > 0:
        ops.append(v2.RandomSolarize(threshold=SOLARIZE_THRESHOLD, p=recipe.solarize_p))
    return v2.Compose([*ops, *_to_normalized(mean, std)])


class PILGaussianBlur:
    """PIL's Gaussian blur with a random sigma (radius) per image, as MoCo v3's code does
    (much faster on one small image than a torch convolution)."""

    def __init__(self, sigma: tuple[float, float]) -> None:
        self.sigma = sigma

    def __call__(self, img: Image.Image) -> Image.Image:
        radius = float(torch.empty(()).uniform_(*self.sigma))
        return img.filter(ImageFilter.GaussianBlur(radius=radius))


class MultiView:
    """Applies one transform per view and returns the list of views."""

    def __init__(self, transforms: Sequence[Callable[[Any], torch.Tensor]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, img: Any) -> list[torch.Tensor]:
        return [t(img) for t in self.transforms]


def train_transform(
    augment: str,
    views: int,
    img_size: int,
    min_scale: float,
    mean: Sequence[float],
    std: Sequence[float],
) -> Callable[[Any], torch.Tensor | list[torch.Tensor]]:
    """Training pipeline for one PIL image: one view (a tensor) or a list of ``views`` views.

    ``augment="none"`` is `eval_transform` (repeated for two views).
    """
    if augment == "none":
        per_view = [eval_transform(img_size, mean, std)] * views
    else:
        per_view = [
            view_transform(r, img_size, mean, std) for r in view_recipes(augment, views, min_scale)
        ]
    return per_view[0] if views == 1 else MultiView(per_view)
