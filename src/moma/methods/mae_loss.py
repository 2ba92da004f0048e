"""MAE's reconstruction loss: mean squared error on the removed patches only."""

from __future__ import annotations

from torch import Tensor, nn

NORM_PIX_EPS = 1e-6


def patchify(imgs: Tensor, patch_size: int) -> Tensor:
    """Cut images into flattened patches: ``[N, C, H, W] -> [N, L, p*p*C]``.

    Patches are numbered row by row (as timm's patch embedding does); inside a patch the
    values are ordered (pixel row, pixel column, channel), as in MAE.
    """
    n, c, h, w = imgs.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {p}")
    x = imgs.reshape(n, c, h // p, p, w // p, p)  # [N, C, h, p, w, p]
    x = x.permute(0, 2, 4, 3, 5, 1)  # [N, h, w, p, p, C]
    return x.reshape(n, (h // p) * (w // p), p * p * c)  # [N, L, p*p*C]


def unpatchify(
    patches: Tensor, patch_size: int, grid: tuple[int, int], channels: int = 3
) -> Tensor:
    """Inverse of :func:`patchify`: ``[N, L, p*p*C] -> [N, C, H, W]``."""
    n = patches.shape[0]
    p = patch_size
    rows, cols = grid
    x = patches.reshape(n, rows, cols, p, p, channels)  # [N, h, w, p, p, C]
    x = x.permute(0, 5, 1, 3, 2, 4)  # [N, C, h, p, w, p]
    return x.reshape(n, channels, rows * p, cols * p)


def normalize_patches(target: Tensor, eps: float = NORM_PIX_EPS) -> Tensor:
    """MAE's ``norm_pix_loss`` target: each patch as ``(x - mean) / sqrt(var + eps)``.

    ``target [N, L, K] -> [N, L, K]``; mean and (unbiased, as in the official code) variance
    are taken over the ``K`` values of one patch.
    """
    mean = target.mean(dim=-1, keepdim=True)  # [N, L, 1]
    var = target.var(dim=-1, keepdim=True)  # [N, L, 1]
    return (target - mean) / (var + eps) ** 0.5


class MAELoss(nn.Module):
    """Per-patch MSE averaged over the removed patches only.

    Inputs:
        pred: decoder output ``[N, L, p*p*C]`` (one row per patch, grid order).
        target: the patchified images ``[N, L, p*p*C]`` (see :func:`patchify`).
        mask: ``[N, L]``, 1 = removed (the loss), 0 = visible (ignored).

    Output: a scalar. With ``norm_pix`` the target is first normalised per patch by
    :func:`normalize_patches`. Computed in float32 whatever the autocast dtype of ``pred``.
    """

    def __init__(self, norm_pix: bool = True) -> None:
        super().__init__()
        self.norm_pix = norm_pix

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        target = target.float()
        if self.norm_pix:
            target = normalize_patches(target)
        per_patch = ((pred.float() - target) ** 2).mean(dim=-1)  # [N, L]
        mask = mask.to(per_patch.dtype)
        return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)

    def extra_repr(self) -> str:
        return f"norm_pix={self.norm_pix}"
