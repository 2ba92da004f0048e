"""Model-size presets of ``moma bench``: which backbones, batch and step counts per setting."""

from __future__ import annotations

from dataclasses import dataclass, field

from moma.errors import ConfigError
from moma.methods.mae import MAEConfig
from moma.methods.mocov3 import MoCoV3Config
from moma.models.vit import BackboneConfig

FMNIST_IMAGES = 60_000  # one Fashion-MNIST training epoch
IMAGENET_IMAGES = 1_281_167  # one ImageNet-1k training epoch


def _fmnist_vit(depth: int = 6, embed_dim: int | None = None, heads: int | None = None):
    return BackboneConfig(
        arch="vit_tiny_patch16_224",
        img_size=32,
        patch_size=4,
        depth=depth,
        embed_dim=embed_dim,
        num_heads=heads,
    )


def _vit224(arch: str) -> BackboneConfig:
    return BackboneConfig(arch=arch, img_size=224, patch_size=16, depth=None)


@dataclass(frozen=True)
class SizePreset:
    """One benchmark setting.

    Attributes:
        name: what ``--sizes`` calls it.
        img_size: image side given to the models.
        teacher_sizes: ``(label, backbone)`` pairs whose full-token forward is timed.
        teacher: the teachers' backbone in the MOMA steps (every teacher has this size).
        student: the student in the mask-ratio sweep and the MOMA steps, and the backbone of
            the MAE and MoCo v3 steps it is compared with.
        compact_student: an optional smaller student for an extra two-teacher MOMA step.
        mae, mocov3: the teachers' own method options at this size.
        batch_size, steps, warmup: defaults when the config leaves them unset.
        epoch_images: images in one epoch of the dataset this size stands for.
        epoch_name: that dataset's name.
        embedded_data: whether the embedded Fashion-MNIST data pipeline belongs to this size.
    """

    name: str
    img_size: int
    teacher_sizes: tuple[tuple[str, BackboneConfig], ...]
    teacher: tuple[str, BackboneConfig]
    student: tuple[str, BackboneConfig]
    compact_student: tuple[str, BackboneConfig] | None = None
    mae: MAEConfig = field(default_factory=MAEConfig)
    mocov3: MoCoV3Config = field(default_factory=MoCoV3Config)
    batch_size: int = 256
    steps: int = 10
    warmup: int = 3
    epoch_images: int = FMNIST_IMAGES
    epoch_name: str = "Fashion-MNIST"
    embedded_data: bool = True

    @property
    def jpeg_side(self) -> int:
        """Side of the generated JPEGs: larger than the model input, as stored datasets are."""
        return max(64, round(self.img_size * 8 / 7))


def fmnist_preset() -> SizePreset:
    """32 px Fashion-MNIST: 6-block 192-dim ViT/4 teachers and student (the shipped configs)."""
    vit = _fmnist_vit()
    return SizePreset(
        name="fmnist",
        img_size=32,
        teacher_sizes=(("ViT 6x192/4", vit),),
        teacher=("ViT 6x192/4", vit),
        student=("ViT 6x192/4", vit),
        compact_student=("ViT 4x128/4", _fmnist_vit(depth=4, embed_dim=128, heads=4)),
        mae=MAEConfig(mask_ratio=0.75, decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4),
        mocov3=MoCoV3Config(proj_hidden_dim=1024, proj_dim=256, pred_hidden_dim=1024),
        batch_size=256,
        steps=10,
        warmup=3,
    )


def vit224_preset() -> SizePreset:
    """224 px ViT-Ti/S/B: ViT-B/16 teachers (as the official MAE and MoCo v3 files), a
    ViT-S/16 student; MAE and MoCo v3 with the papers' head sizes."""
    return SizePreset(
        name="224",
        img_size=224,
        teacher_sizes=(
            ("ViT-Ti/16", _vit224("vit_tiny_patch16_224")),
            ("ViT-S/16", _vit224("vit_small_patch16_224")),
            ("ViT-B/16", _vit224("vit_base_patch16_224")),
        ),
        teacher=("ViT-B/16", _vit224("vit_base_patch16_224")),
        student=("ViT-S/16", _vit224("vit_small_patch16_224")),
        mae=MAEConfig(
            mask_ratio=0.75, decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16
        ),
        mocov3=MoCoV3Config(proj_hidden_dim=4096, proj_dim=256, pred_hidden_dim=4096),
        batch_size=16,
        steps=3,
        warmup=1,
        epoch_images=IMAGENET_IMAGES,
        epoch_name="ImageNet-1k",
        embedded_data=False,
    )


def tiny_preset() -> SizePreset:
    """A 2-block 32-dim ViT on 16 px images: for the harness's own smoke test only."""
    vit = BackboneConfig(
        arch="vit_tiny_patch16_224", img_size=16, patch_size=4, depth=2, embed_dim=32, num_heads=2
    )
    return SizePreset(
        name="tiny",
        img_size=16,
        teacher_sizes=(("ViT 2x32/4", vit),),
        teacher=("ViT 2x32/4", vit),
        student=("ViT 2x32/4", vit),
        mae=MAEConfig(mask_ratio=0.75, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2),
        mocov3=MoCoV3Config(proj_hidden_dim=32, proj_dim=16, pred_hidden_dim=32),
        batch_size=8,
        steps=2,
        warmup=1,
        embedded_data=False,
    )


PRESETS = {"fmnist": fmnist_preset, "224": vit224_preset, "tiny": tiny_preset}


def get_presets(sizes: str) -> list[SizePreset]:
    """Presets named by ``sizes``: ``fmnist``, ``224``, ``tiny`` or a comma list of them."""
    names = [s.strip() for s in str(sizes).split(",") if s.strip()]
    unknown = [n for n in names if n not in PRESETS]
    if not names or unknown:
        raise ConfigError(
            f"bench sizes must be a comma list of {', '.join(PRESETS)}, got {sizes!r}"
        )
    return [PRESETS[n]() for n in names]
