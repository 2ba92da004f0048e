"""Per-image random colour operations on float RGB batches ``[N, 3, H, W]`` in [0, 1].

Each matches its torchvision counterpart (ColorJitter, RandomGrayscale, GaussianBlur,
RandomSolarize) for one image, but draws its parameters per image and runs on the whole
batch at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from moma.data.recipes import (
    MOCOV3_JITTER,
    SOLARIZE_THRESHOLD,
    ViewRecipe,
    blur_kernel_size,
    blur_sigma,
)

_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale


def gray(x: Tensor) -> Tensor:
    """Luma ``[N, 1, H, W]`` of RGB ``[N, 3, H, W]`` (torchvision's weights)."""
    r, g, b = x.unbind(1)
    w = _GRAY_WEIGHTS
    return (w[0] * r + w[1] * g + w[2] * b).unsqueeze(1)  # [N, 1, H, W]


def blend(a: Tensor, b: Tensor, f: Tensor) -> Tensor:
    """``f * a + (1 - f) * b`` with a per-image ``f``, clamped to [0, 1]."""
    f = f.view(-1, 1, 1, 1)
    return (f * a + (1.0 - f) * b).clamp_(0.0, 1.0)


def _rgb_to_hsv(x: Tensor) -> Tensor:
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    crd = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / crd, (maxc - g) / crd, (maxc - b) / crd
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack([h, s, maxc], dim=1)


def _hsv_to_rgb(x: Tensor) -> Tensor:
    h, s, v = x.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = (i.to(torch.int64) % 6).unsqueeze(1)  # [N, 1, H, W]
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * f)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0)
    rgb = [
        torch.stack(c, dim=1).gather(1, i)  # pick sector i: [N, 1, H, W]
        for c in ((v, q, p, p, t, v), (t, v, v, q, p, p), (p, p, t, v, v, q))
    ]
    return torch.cat(rgb, dim=1)


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue of each image by its own ``shift`` (in turns, [-0.5, 0.5])."""
    hsv = _rgb_to_hsv(x)
    h = torch.remainder(hsv[:, 0] + shift.view(-1, 1, 1), 1.0)
    return _hsv_to_rgb(torch.stack([h, hsv[:, 1], hsv[:, 2]], dim=1))


def jitter_op(op: int, x: Tensor, f: Tensor) -> Tensor:
    """ColorJitter operation ``op`` with a per-image factor ``f``.

    ``op``: 0 brightness, 1 contrast, 2 saturation, 3 hue (``f`` is then the hue shift).
    """
    if op == 0:  # brightness
        return (x * f.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)
    if op == 1:  # contrast: blend with the mean gray level of each image
        return blend(x, gray(x).mean(dim=(1, 2, 3), keepdim=True), f)
    if op == 2:  # saturation: blend with the gray image
        return blend(x, gray(x), f)
    return adjust_hue(x, f)


def color_jitter(
    x: Tensor, p: float, generator: torch.Generator, grouped: bool | None = None
) -> Tensor:
    """ColorJitter(0.4, 0.4, 0.2, 0.1) applied with probability ``p`` per image, each image
    with its own factors and its own random order of the four operations (as torchvision).

    Two equal computations (same draws, same result): ``grouped`` (the CPU's default) runs
    each operation at each of the four steps on just the images that do it then, which does
    the least arithmetic; otherwise (a GPU's default) every step runs all four operations
    on the whole batch and keeps per image the one it drew: four times the arithmetic, but
    no data-dependent indexing, so no host-device synchronisation (16 per view grouped).
    """
    n, dev = x.shape[0], x.device
    bri, con, sat, hue = MOCOV3_JITTER
    lo = torch.tensor([1 - bri, 1 - con, 1 - sat, -hue], device=dev)
    hi = torch.tensor([1 + bri, 1 + con, 1 + sat, hue], device=dev)
    factors = lo + (hi - lo) * torch.rand(n, 4, generator=generator, device=dev)  # [N, 4]
    order = torch.argsort(torch.rand(n, 4, generator=generator, device=dev), dim=1)
    apply = torch.rand(n, generator=generator, device=dev) < p
    if grouped is None:
        grouped = dev.type != "cuda"
    if not grouped:
        for step in range(4):
            op_now = torch.where(apply, order[:, step], -1).view(-1, 1, 1, 1)  # -1: none
            out = x
            for op in range(4):
                out = torch.where(op_now == op, jitter_op(op, x, factors[:, op]), out)
            x = out
        return x
    x = x.clone()
    for step in range(4):
        for op in range(4):
            idx = torch.nonzero(apply & (order[:, step] == op)).squeeze(1)
            if idx.numel():
                x[idx] = jitter_op(op, x[idx], factors[idx, op])
    return x


def random_grayscale(x: Tensor, p: float, generator: torch.Generator) -> Tensor:
    """Replace each image by its 3-channel gray version with probability ``p``."""
    pick = torch.rand(x.shape[0], generator=generator, device=x.device) < p
    return torch.where(pick.view(-1, 1, 1, 1), gray(x).expand_as(x), x)


def gaussian_blur(
    x: Tensor, p: float, sigma: tuple[float, float], kernel: int, generator: torch.Generator
) -> Tensor:
    """Separable Gaussian blur with a per-image sigma, applied with probability ``p``."""
    n, c, height, width = x.shape
    dev = x.device
    s = sigma[0] + (sigma[1] - sigma[0]) * torch.rand(n, generator=generator, device=dev)
    pick = torch.rand(n, generator=generator, device=dev) < p
    half = kernel // 2
    t = torch.arange(kernel, device=dev, dtype=x.dtype) - half
    k = torch.exp(-(t.view(1, -1) ** 2) / (2.0 * s.view(-1, 1).to(x.dtype) ** 2))
    k = k / k.sum(dim=1, keepdim=True)  # [N, K]
    delta = (t == 0).to(x.dtype).expand(n, -1)
    k = torch.where(pick.view(-1, 1), k, delta).repeat_interleave(c, dim=0)  # [N*C, K]
    pad = min(half, height - 1, width - 1)
    if pad < half:  # tiny images: the kernel must not be wider than the reflected border
        k = k[:, half - pad : half + pad + 1]
    y = F.pad(x.reshape(1, n * c, height, width), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k.view(n * c, 1, 1, -1), groups=n * c)
    y = F.conv2d(y, k.view(n * c, 1, -1, 1), groups=n * c)
    return y.view(n, c, height, width)


def random_solarize(x: Tensor, p: float, generator: torch.Generator) -> Tensor:
    """Invert pixels >= 128/255 of each image with probability ``p`` (PIL's solarize)."""
    pick = torch.rand(x.shape[0], generator=generator, device=x.device) < p
    mask = pick.view(-1, 1, 1, 1) & (x >= SOLARIZE_THRESHOLD / 255.0)
    return torch.where(mask, 1.0 - x, x)


def apply_color_recipe(
    x: Tensor, recipe: ViewRecipe, generator: torch.Generator, img_size: int
) -> Tensor:
    """The colour part of a view recipe on float RGB ``[N, 3, S, S]`` in [0, 1]: jitter,
    grayscale, blur, solarise, each with its probability (the order of MoCo v3's recipe)."""
    if recipe.jitter_p > 0:
        x = color_jitter(x, recipe.jitter_p, generator)
    if recipe.gray_p > 0:
        x = random_grayscale(x, recipe.gray_p, generator)
    if recipe.blur_p > 0:
        sigma, k = blur_sigma(img_size), blur_kernel_size(img_size)
        x = gaussian_blur(x, recipe.blur_p, sigma, k, generator)
    if recipe.solarize_p > 0:
        x = random_solarize(x, recipe.solarize_p, generator)
    return x
