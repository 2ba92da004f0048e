"""The architecture of a ViT checkpoint: what its weights determine, and a head count.

:func:`infer_vit_kwargs` reads every ``create_vit`` argument the tensors fix; ``num_heads``
cannot be read from weights, so :func:`guess_num_heads` supplies one. Re-exported by
:mod:`moma.models.checkpoint`.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from moma.errors import CheckpointError
from moma.models.vit import create_vit

# timm's standard widths -> heads (vit_tiny/small/base/large/huge, SigLIP so400m, DINOv2 giant).
TIMM_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1152: 16, 1280: 16, 1536: 24}
# MoCo v3's own ViTs: ViT-S is 384 dims with 12 heads (timm's vit_small has 6), ViT-B 768 / 12.
MOCOV3_HEADS = {384: 12, 768: 12}
# The timm arch named for a width when nothing else names one (sizes always come from the weights).
BASE_ARCH = {
    192: "vit_tiny_patch16_224",
    384: "vit_small_patch16_224",
    768: "vit_base_patch16_224",
    1024: "vit_large_patch16_224",
    1280: "vit_huge_patch14_224",
}
FALLBACK_ARCH = BASE_ARCH[768]  # a width BASE_ARCH does not know


def base_arch(embed_dim: int) -> str:
    """The timm base arch recorded for a ViT of width ``embed_dim`` (its sizes are recorded too)."""
    return BASE_ARCH.get(int(embed_dim), FALLBACK_ARCH)


def _need(sd: Mapping[str, torch.Tensor], key: str, where: Path) -> torch.Tensor:
    if key not in sd:
        raise CheckpointError(f"{where}: cannot infer the architecture: key {key!r} is missing")
    return sd[key]


def mlp_ratio_for(hidden: int, dim: int) -> float:
    """An mlp_ratio for which timm's int(dim * ratio) gives back ``hidden``."""
    r = hidden / dim
    while int(dim * r) < hidden:
        r = math.nextafter(r, math.inf)
    return r


def infer_vit_kwargs(
    sd: Mapping[str, torch.Tensor], path: str | Path = "<checkpoint>"
) -> dict[str, Any]:
    """Everything about a timm ViT that its weights determine (``num_heads`` is not among it)."""
    where = Path(path)
    w = _need(sd, "patch_embed.proj.weight", where)
    if w.ndim != 4:
        raise CheckpointError(
            f"{where}: patch_embed.proj.weight has shape {tuple(w.shape)}, expected a 4-d conv weight"
        )
    embed_dim, in_chans, ph, pw = (int(s) for s in w.shape)
    depth = 1 + max(
        (int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))),
        default=-1,
    )
    if depth == 0:
        raise CheckpointError(f"{where}: cannot infer the architecture: no blocks.* keys")
    fc1 = _need(sd, "blocks.0.mlp.fc1.weight", where)
    kw: dict[str, Any] = {
        "patch_size": ph if ph == pw else (ph, pw),
        "in_chans": in_chans,
        "embed_dim": embed_dim,
        "depth": depth,
        "mlp_ratio": mlp_ratio_for(int(fc1.shape[0]), embed_dim),
        "qkv_bias": "blocks.0.attn.qkv.bias" in sd,
        "class_token": "cls_token" in sd,
    }
    if "blocks.0.attn.q_norm.weight" in sd:
        kw["qk_norm"] = True
    if "blocks.0.ls1.gamma" in sd:
        kw["init_values"] = 1e-5  # any value: the gammas come from the file
    if "norm_pre.weight" in sd:
        kw["pre_norm"] = True
    reg = int(sd["reg_token"].shape[1]) if "reg_token" in sd else 0
    if reg:
        kw["reg_tokens"] = reg
    if any(k.startswith("attn_pool.") for k in sd):
        kw["global_pool"] = "map"  # SigLIP-style attention pool (its feature is the global one)
    elif "fc_norm.weight" in sd and "norm.weight" not in sd:
        kw["global_pool"] = "avg"  # e.g. MAE fine-tuned: the final norm lives after pooling
    elif not kw["class_token"]:
        # no CLS to pool: the mean of the patch tokens, after whichever norm the file has
        kw["global_pool"] = "avg"
        kw["fc_norm"] = "fc_norm.weight" in sd
    if "norm.weight" not in sd and "fc_norm.weight" not in sd:
        kw["final_norm"] = False
    pe = sd.get("pos_embed")
    if pe is None:
        kw["pos_embed"] = "none"
        return kw
    n = int(pe.shape[1])
    prefix = int(kw["class_token"]) + reg
    g = math.isqrt(max(n - prefix, 0))
    if reg and math.isqrt(n) ** 2 == n:
        # timm's register ViTs (DINOv2 ...) give neither CLS nor registers a position
        g = math.isqrt(n)
        kw["no_embed_class"] = True
    elif g * g == n - prefix and g > 0:
        pass
    elif prefix and math.isqrt(n) ** 2 == n:
        g = math.isqrt(n)
        kw["no_embed_class"] = True
    else:
        raise CheckpointError(
            f"{where}: pos_embed has {n} positions, which is no square patch grid after {prefix} "
            "prefix token(s); pass img_size= (and patch_size=)"
        )
    kw["img_size"] = g * ph if ph == pw else (g * ph, g * pw)
    return kw


@functools.lru_cache(maxsize=32)
def arch_defaults(arch: str) -> tuple[int, int] | None:
    """(embed_dim, num_heads) of a timm arch, built on the meta device (no memory, no init)."""
    try:
        m = create_vit(arch, depth=1, device="meta")
    except Exception:
        return None
    return int(m.embed_dim), int(m.blocks[0].attn.num_heads)


def guess_num_heads(embed_dim: int, fmt: str = "timm", arch: str | None = None) -> tuple[int, str]:
    """A head count for weights that do not record one, and where it came from.

    MoCo v3 layout: 12 for 384 and 768 dims. Else ``arch``'s default when its width matches, else
    timm's standard sizes (192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16), else a 64-dim head
    (or the largest of 32/16/8 that divides ``embed_dim``).
    """
    if fmt == "mocov3" and embed_dim in MOCOV3_HEADS:
        return MOCOV3_HEADS[embed_dim], "MoCo v3 layout"
    if arch:
        d = arch_defaults(arch)
        if d is not None and d[0] == embed_dim:
            return d[1], f"default of {arch}"
    if embed_dim in TIMM_HEADS:
        return TIMM_HEADS[embed_dim], "timm standard size"
    for head_dim in (64, 32, 16, 8):
        if embed_dim % head_dim == 0:
            return embed_dim // head_dim, f"guessed: head dim {head_dim}"
    return 1, "guessed: one head"
