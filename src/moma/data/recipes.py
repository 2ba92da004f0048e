"""Augmentation recipes (MAE, MoCo v3), shared by the per-image and the batched paths."""

from __future__ import annotations

from dataclasses import dataclass

# MoCo v3 / BYOL two-view recipe: the views differ in blur and solarisation probability.
MOCOV3_CROP_SCALE = (0.08, 1.0)
MOCOV3_JITTER = (0.4, 0.4, 0.2, 0.1)  # brightness, contrast, saturation, hue
MOCOV3_JITTER_P = 0.8
MOCOV3_GRAY_P = 0.2
MOCOV3_BLUR_P = (1.0, 0.1)
MOCOV3_SOLARIZE_P = (0.0, 0.2)
SOLARIZE_THRESHOLD = 128  # uint8 pixels >= 128 are inverted (PIL's ImageOps.solarize)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
# The 224 px recipe blurs with sigma in [0.1, 2.0] and a 23 px kernel (about 10% of the image);
# both scale with the image side so a 32 px image is blurred as much, relatively.
_BLUR_SIGMA_224 = (0.1, 2.0)
_REFERENCE_SIDE = 224


@dataclass(frozen=True)
class ViewRecipe:
    """What one augmented view does (probabilities per image)."""

    crop_scale: tuple[float, float]
    bicubic: bool
    jitter_p: float = 0.0
    gray_p: float = 0.0
    blur_p: float = 0.0
    solarize_p: float = 0.0


def blur_sigma(img_size: int) -> tuple[float, float]:
    """Gaussian-blur sigma range in pixels for images of side ``img_size``."""
    k = img_size / _REFERENCE_SIDE
    return (_BLUR_SIGMA_224[0] * k, _BLUR_SIGMA_224[1] * k)


def blur_kernel_size(img_size: int) -> int:
    """Odd kernel side, about 10% of the image (23 at 224 px, 3 at 32 px)."""
    return max(3, int(0.1 * img_size) // 2 * 2 + 1)


def view_recipes(augment: str, views: int, min_scale: float) -> list[ViewRecipe]:
    """One `ViewRecipe` per view for ``augment`` in ``("mae", "mocov3")``.

    MAE: RandomResizedCrop(scale=(min_scale, 1), bicubic) + flip, the same recipe per view.
    MoCo v3: view 1 always blurred and never solarised, view 2 blurred with p=0.1 and
    solarised with p=0.2 (BYOL's asymmetric views); with ``views=1`` only view 1.
    """
    if augment == "mae":
        return [ViewRecipe(crop_scale=(min_scale, 1.0), bicubic=True)] * views
    return [
        ViewRecipe(
            crop_scale=MOCOV3_CROP_SCALE,
            bicubic=False,
            jitter_p=MOCOV3_JITTER_P,
            gray_p=MOCOV3_GRAY_P,
            blur_p=MOCOV3_BLUR_P[i],
            solarize_p=MOCOV3_SOLARIZE_P[i],
        )
        for i in range(views)
    ]
