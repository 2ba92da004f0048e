"""CLS-to-patch attention of a ViT's last block, drawn over the input images.

timm's fused attention does not return its weights, so they are recomputed from the last
block's ``qkv`` projection: ``softmax(q k^T * scale)``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from moma.models.masking import embed_tokens
from moma.models.vit import grid_size
from moma.report.plots import save_figure

log = logging.getLogger(__name__)


@torch.no_grad()
def last_block_attention(vit: VisionTransformer, images: Tensor) -> tuple[Tensor, Tensor]:
    """Attention weights of the last block and that block's input.

    Returns ``(attn [N, heads, T, T], x [N, T, D])`` with ``T = prefix + patches``; ``x`` is
    the token sequence entering the last block (before its ``norm1``).
    """
    x = embed_tokens(vit, images)  # [N, T, D]
    x = vit.norm_pre(x)
    for blk in vit.blocks[:-1]:
        x = blk(x)
    last = vit.blocks[-1]
    attn = last.attn
    y = last.norm1(x)
    n, t, _ = y.shape
    qkv = attn.qkv(y).reshape(n, t, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])  # [N, H, T, hd]
    weights = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # [N, H, T, T]
    return weights, x


@torch.no_grad()
def cls_attention(vit: VisionTransformer, images: Tensor) -> Tensor:
    """CLS-to-patch attention of the last block, averaged over heads: ``[N, rows, cols]``."""
    was_training = vit.training
    vit.eval()
    try:
        weights, _ = last_block_attention(vit, images.float())
    finally:
        vit.train(was_training)
    p = vit.num_prefix_tokens
    cls_to_patch = weights[:, :, 0, p:].mean(dim=1)  # [N, L]
    rows, cols = grid_size(vit)
    return cls_to_patch.reshape(-1, rows, cols)


def _display(img: Tensor) -> Tensor:
    """A normalised image ``[C, H, W]`` as ``[H, W, C]`` (or ``[H, W]``) in [0, 1]."""
    img = img.detach().float().cpu()
    img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-8)
    if img.shape[0] == 1 or (
        img.shape[0] == 3 and torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])
    ):
        return img[0]
    return img.permute(1, 2, 0)


def attention_maps(
    backbones: dict[str, VisionTransformer],
    images: Tensor,
    out_path: Path,
    title: str = "CLS attention of the last block (mean over heads)",
) -> Path:
    """Grid of images (rows) x backbones (columns): CLS-to-patch attention over each image.

    Backbones that are not ViTs, that have no CLS token (SigLIP-style), or whose input size
    differs from the images, are skipped with a warning. Writes a PNG to ``out_path`` and returns it.
    """
    size = tuple(images.shape[-2:])
    usable: dict[str, Tensor] = {}
    for name, vit in backbones.items():
        if not isinstance(vit, VisionTransformer):
            log.warning("attention maps: %s is not a ViT, skipped", name)
            continue
        if not vit.has_class_token:
            log.warning("attention maps: %s has no CLS token (its pool is its own), skipped", name)
            continue
        if tuple(vit.patch_embed.img_size) != size:
            log.warning(
                "attention maps: %s expects %s images, got %s; skipped",
                name,
                vit.patch_embed.img_size,
                size,
            )
            continue
        device = next(vit.parameters()).device
        att = cls_attention(vit, images.to(device)).cpu()  # [N, r, c]
        att = F.interpolate(att[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        usable[name] = att
    n, cols = len(images), 1 + len(usable)
    fig = Figure(figsize=(2.3 * cols + 0.8, 2.3 * n + 0.6), layout="constrained")
    axes = fig.subplots(n, cols, squeeze=False)
    for i in range(n):
        shown = _display(images[i])
        cmap = "gray" if shown.ndim == 2 else None
        axes[i][0].imshow(shown.numpy(), cmap=cmap)
        axes[i][0].set_title("input" if i == 0 else "", fontsize=9)
        for j, (name, att) in enumerate(usable.items(), start=1):
            ax = axes[i][j]
            ax.imshow(shown.numpy(), cmap=cmap)
            a = att[i]
            a = (a - a.min()) / (a.max() - a.min()).clamp_min(1e-12)
            im = ax.imshow(a.numpy(), cmap="inferno", alpha=0.6, vmin=0, vmax=1)
            if i == 0:
                ax.set_title(name, fontsize=9)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    if usable:
        bar = fig.colorbar(im, ax=axes, shrink=0.8)
        bar.set_label("attention (per-image min-max)")
    fig.suptitle(title)
    return save_figure(fig, out_path)
