"""timm Vision Transformer backbones, built by name with size overrides."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import timm
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from moma.errors import ConfigError


@dataclass
class BackboneConfig:
    """A timm ViT by name plus the overrides a small-image setting needs.

    ``None`` keeps the value of the named architecture (e.g. ``vit_tiny_patch16_224``
    is 12 blocks x 192 dims x 3 heads). On Fashion-MNIST we use 32px images and patch 4.
    """

    arch: str = "vit_tiny_patch16_224"
    img_size: int = 32
    patch_size: int = 4
    depth: int | None = 6
    embed_dim: int | None = None
    num_heads: int | None = None
    mlp_ratio: float | None = None
    drop_path_rate: float = 0.0

    def timm_kwargs(self) -> dict:
        """Keyword arguments for ``timm.create_model`` (only the ones that are set)."""
        kw = {k: v for k, v in asdict(self).items() if k != "arch" and v is not None}
        return kw

    def build(self) -> VisionTransformer:
        """Create the (randomly initialised) backbone."""
        return create_vit(self.arch, **self.timm_kwargs())


def create_vit(arch: str = "vit_tiny_patch16_224", **overrides) -> VisionTransformer:
    """Create a randomly initialised timm ``VisionTransformer`` without a classifier head.

    ``overrides`` go to ``timm.create_model`` (``img_size``, ``patch_size``, ``depth``,
    ``embed_dim``, ``num_heads``, ``drop_path_rate``, ...). LayerNorm eps is timm's 1e-6,
    as in MAE and MoCo v3.
    """
    overrides.setdefault("num_classes", 0)
    if not timm.is_model(arch):
        raise ConfigError(f"arch {arch!r} is not a timm model name")
    # dynamic_img_size off: position tables are fixed-size, as in the official checkpoints.
    try:
        model = timm.create_model(arch, pretrained=False, **overrides)
    except (AssertionError, TypeError, ValueError, RuntimeError, ZeroDivisionError) as e:
        sizes = ", ".join(f"{k}={v}" for k, v in overrides.items())
        why = " ".join(str(e).split()) or type(e).__name__
        raise ConfigError(f"timm cannot build {arch} with {sizes}: {why}") from None
    if not isinstance(model, VisionTransformer):
        raise ConfigError(f"arch {arch!r} is not a timm VisionTransformer")
    return model


def describe(model: VisionTransformer) -> dict:
    """The shape facts of a ViT that a checkpoint or export records."""
    return {
        "img_size": int(model.patch_embed.img_size[0]),
        "patch_size": int(model.patch_embed.patch_size[0]),
        "embed_dim": int(model.embed_dim),
        "depth": len(model.blocks),
        "num_heads": int(model.blocks[0].attn.num_heads),
        "mlp_ratio": float(model.blocks[0].mlp.fc1.out_features / model.embed_dim),
        "in_chans": int(model.patch_embed.proj.in_channels),
        "num_prefix_tokens": int(model.num_prefix_tokens),
        "global_pool": model.global_pool,
    }


def grid_size(model: VisionTransformer) -> tuple[int, int]:
    """Patch grid (rows, cols) of a ViT."""
    return tuple(int(g) for g in model.patch_embed.grid_size)


def has_global_feature(vit: VisionTransformer) -> bool:
    """Whether :func:`global_feature` is defined for ``vit``: a CLS token or a pooling head."""
    return bool(vit.has_class_token) or bool(vit.global_pool) or vit.attn_pool is not None


def global_feature(vit: VisionTransformer, tokens: Tensor) -> Tensor:
    """One vector per image from the output tokens of ``vit``: ``[N, T, D] -> [N, D]``.

    The CLS token (``tokens[:, 0]``) when the model has one; otherwise the model's own pooled
    feature, through timm's pool and ``fc_norm`` in pre-logits mode (``forward_head(...,
    pre_logits=True)``): the attention pool of a ``global_pool='map'`` ViT (SigLIP) or the mean
    of the patch tokens of an ``avg`` one. ``tokens`` may be a masked subset of the patch
    tokens (prefix tokens first), as the student's are during distillation.

    Raises :class:`~moma.errors.ConfigError` for a ViT with neither (``global_pool=''``).
    """
    if vit.has_class_token:
        return tokens[:, 0]
    if not has_global_feature(vit):
        raise ConfigError(
            "the ViT has no CLS token and no pooling head (global_pool=''), so it has no global "
            "feature: use patch-token features (eval --*.features mean, --moma.targets patch)"
        )
    return vit.forward_head(tokens, pre_logits=True)  # [N, D]
