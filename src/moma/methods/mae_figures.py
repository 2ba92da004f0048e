"""A figure of MAE reconstructions: input, masked input, reconstruction with visible patches.

Drawn with matplotlib's object-oriented API (Agg canvas, no pyplot state), saved atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from moma.data import dataset_stats, load_split
from moma.methods.mae_loss import NORM_PIX_EPS, patchify, unpatchify
from moma.run_folder import atomic_write

if TYPE_CHECKING:
    from moma.data.config import DataConfig
    from moma.methods.mae import MAEMethod

MASKED_GREY = 0.5  # removed patches are drawn in mid grey


@torch.no_grad()
def reconstruct(model: MAEMethod, imgs: Tensor, seed: int = 0) -> dict[str, Tensor]:
    """Run ``model`` on normalised ``imgs [N, C, H, W]`` with a fixed mask (``seed``).

    Returns normalised-space images ``[N, C, H, W]``: ``input``, ``reconstruction`` (the
    decoder's prediction of every patch) and ``pasted`` (the prediction on removed patches,
    the input on visible ones), plus ``mask`` ``[N, 1, H, W]`` (1 = removed). With
    ``norm_pix_loss`` the prediction is mapped back to pixels with each patch's own mean and
    variance, as MAE's visualisation does.
    """
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        imgs = imgs.to(device=device, dtype=torch.float32)
        gen = torch.Generator(device=device).manual_seed(seed)
        latent, mask, ids_restore = model.forward_encoder(imgs, gen)
        pred = model.forward_decoder(latent, ids_restore).float()  # [N, L, p*p*C]
        if model.cfg.norm_pix_loss:
            target = patchify(imgs, model.patch_size)  # [N, L, p*p*C]
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            pred = pred * (var + NORM_PIX_EPS) ** 0.5 + mean
        recon = unpatchify(pred, model.patch_size, model.grid, model.in_chans)
        p2 = model.patch_size**2
        mask_px = mask.float().unsqueeze(-1).expand(-1, -1, p2)  # [N, L, p*p]
        mask_img = unpatchify(mask_px, model.patch_size, model.grid, 1)  # [N, 1, H, W]
        pasted = imgs * (1 - mask_img) + recon * mask_img
        return {"input": imgs, "reconstruction": recon, "pasted": pasted, "mask": mask_img}
    finally:
        model.train(was_training)


def _to_display(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Normalised ``[N, C, H, W]`` -> displayable ``[N, H, W, C]`` in [0, 1]."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x * s + m).clamp(0, 1).permute(0, 2, 3, 1).cpu()


def save_reconstructions(
    model: MAEMethod,
    imgs: Tensor,
    path: str | Path,
    mean: Sequence[float],
    std: Sequence[float],
    seed: int = 0,
) -> Path:
    """Save a PNG grid: one column per image, rows input / masked / reconstruction + visible."""
    from matplotlib.figure import Figure

    out = reconstruct(model, imgs, seed)
    shown = _to_display(out["input"], mean, std)  # [N, H, W, C]
    removed = out["mask"].permute(0, 2, 3, 1).cpu()  # [N, H, W, 1]
    rows = {
        "input": shown,
        f"masked ({model.cfg.mask_ratio:.0%})": shown * (1 - removed) + MASKED_GREY * removed,
        "reconstruction + visible": _to_display(out["pasted"], mean, std),
    }

    n = imgs.shape[0]
    fig = Figure(figsize=(1.3 * n, 1.4 * len(rows)))
    axes = fig.subplots(len(rows), n, squeeze=False)
    for r, (title, images) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(images[c].numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(title, fontsize=8)
    fig.tight_layout()
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))


def fixed_images(data_cfg: DataConfig, n: int) -> Tensor:
    """``n`` fixed, evenly spaced training images, deterministic preprocessing only."""

    ds = load_split(data_cfg, "train")
    idx = torch.linspace(0, len(ds) - 1, n).round().long().tolist()
    return torch.stack([ds[i][0] for i in idx])  # [n, C, H, W]


def save_training_reconstructions(
    model: MAEMethod, data_cfg: DataConfig, path: str | Path, n: int = 8
) -> Path:
    """The reconstruction figure of ``n`` fixed training images (what ``run_mae`` saves)."""

    mean, std = dataset_stats(data_cfg)
    return save_reconstructions(model, fixed_images(data_cfg, n), path, mean, std)
