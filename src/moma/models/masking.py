"""MAE-style random masking and the masked encoder forward of a timm ViT.

Shapes: N batch, L patch tokens, P prefix tokens (CLS), D width, K = kept patch tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

MAX_MASK_RATIO = 0.98


def num_kept(num_patches: int, mask_ratio: float) -> int:
    """How many patch tokens survive masking (at least one)."""
    check_mask_ratio(mask_ratio)
    return max(1, int(num_patches * (1.0 - mask_ratio)))


def check_mask_ratio(mask_ratio: float) -> None:
    """Refuse a ratio outside [0, 0.98] with a clear message."""
    if not 0.0 <= float(mask_ratio) <= MAX_MASK_RATIO:
        raise ValueError(f"mask_ratio must be in [0, {MAX_MASK_RATIO}], got {mask_ratio}")


def random_masking(
    x: Tensor, mask_ratio: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Keep a per-sample random subset of tokens, as MAE does (argsort of uniform noise).

    Args:
        x: patch tokens ``[N, L, D]`` (position embeddings already added).
        mask_ratio: fraction of tokens removed, in [0, 0.98].
        generator: optional ``torch.Generator`` for reproducible masks.

    Returns:
        x_kept ``[N, K, D]``; mask ``[N, L]`` (1 = removed, 0 = kept);
        ids_restore ``[N, L]`` (un-shuffles ``cat(kept, removed)`` back to grid order);
        ids_keep ``[N, K]`` (grid positions of the kept tokens, ascending).
    """
    n, length, d = x.shape
    keep = num_kept(length, mask_ratio)
    noise = torch.rand(n, length, device=x.device, generator=generator)  # [N, L]
    ids_shuffle = torch.argsort(noise, dim=1)
    # Kept ids sorted ascending: the kept tokens stay in grid order, so ratio 0 is the
    # identity and the result does not depend on the (irrelevant) order of the noise.
    ids_keep = torch.sort(ids_shuffle[:, :keep], dim=1).values  # [N, K]
    ids_shuffle = torch.cat([ids_keep, ids_shuffle[:, keep:]], dim=1)  # [N, L]
    ids_restore = torch.argsort(ids_shuffle, dim=1)  # [N, L]
    x_kept = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, d))  # [N, K, D]
    mask = torch.ones(n, length, device=x.device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)  # [N, L] in grid order
    return x_kept, mask, ids_restore, ids_keep


def gather_tokens(tokens: Tensor, ids_keep: Tensor) -> Tensor:
    """Select tokens ``[N, L, D]`` at grid positions ``ids_keep [N, K]`` -> ``[N, K, D]``."""
    return torch.gather(tokens, 1, ids_keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


@dataclass
class MaskedOutput:
    """What the masked encoder forward returns."""

    tokens: Tensor  # [N, P + K, D] after the final norm; prefix (CLS) tokens first
    mask: Tensor  # [N, L], 1 = removed
    ids_restore: Tensor  # [N, L]
    ids_keep: Tensor  # [N, K]
    num_prefix_tokens: int

    @property
    def prefix(self) -> Tensor:
        """Prefix (CLS) tokens ``[N, P, D]``."""
        return self.tokens[:, : self.num_prefix_tokens]

    @property
    def patches(self) -> Tensor:
        """Visible patch tokens ``[N, K, D]``."""
        return self.tokens[:, self.num_prefix_tokens :]


def embed_tokens(vit: VisionTransformer, imgs: Tensor) -> Tensor:
    """Patch-embed images and add position embeddings: ``[N, C, H, W] -> [N, P + L, D]``."""
    x = vit.patch_embed(imgs)  # [N, L, D]
    return vit._pos_embed(x)  # [N, P + L, D]: CLS prepended, pos_embed added (timm)


def forward_encoder_masked(
    vit: VisionTransformer,
    imgs: Tensor,
    mask_ratio: float,
    generator: torch.Generator | None = None,
    return_pre_norm: bool = False,
) -> MaskedOutput:
    """MAE's ``forward_encoder`` on a timm ViT: drop patch tokens, run blocks on the rest.

    Position embeddings are added before masking, CLS is always kept, and the blocks see
    only ``P + K`` tokens, which is where the speed comes from. With ``mask_ratio=0`` the
    result equals ``vit.forward_features(imgs)``.
    """
    p = vit.num_prefix_tokens
    x = embed_tokens(vit, imgs)  # [N, P + L, D]
    patches, mask, ids_restore, ids_keep = random_masking(x[:, p:], mask_ratio, generator)
    x = torch.cat([x[:, :p], patches], dim=1)  # [N, P + K, D]
    x = vit.norm_pre(x)
    x = vit.blocks(x)
    if not return_pre_norm:
        x = vit.norm(x)
    return MaskedOutput(x, mask, ids_restore, ids_keep, p)
