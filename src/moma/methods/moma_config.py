"""MOMA's own options (:class:`MomaConfig`) and its teacher-target cache's
(:class:`CacheConfig`), with their checks.

The run config that holds them with the teachers, the student, the optimiser and the trainer
is :class:`moma.commands.distill.MomaRunConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from moma.errors import ConfigError
from moma.methods.moma_loss import LOSSES, TARGET_NORMS
from moma.models.masking import check_mask_ratio
from moma.moved import forwarder

TARGETS = ("cls", "patch", "cls+patch")
GRID_MISMATCH = ("resample", "error")
CACHE_DTYPES = ("float16", "bfloat16", "float32")

__getattr__ = forwarder(__name__)  # the run config moved to moma.commands.distill


@dataclass
class MomaConfig:
    """MOMA options (docs/DESIGN.md, section 1); every choice the paper leaves open.

    Attributes:
        mask_ratio: fraction of the student's patch tokens dropped, in [0, 0.98].
        targets: ``cls`` (CLS token), ``patch`` (patch tokens at the visible positions) or
            ``cls+patch`` (the two losses added, each a mean over its tokens).
        target_norm: teacher token normalisation: ``layernorm`` (per token, no affine), ``l2``
            or ``none``.
        loss: ``smooth_l1`` | ``mse`` | ``cosine`` (2 - 2 cos, per token).
        smooth_l1_beta: the L1/L2 switch point of ``smooth_l1``.
        projector_layers: Linear layers per projector (LayerNorm + GELU between them); ``0``
            means no projector (student and teacher widths must then agree).
        projector_hidden_dim: hidden width; ``None`` = twice the teacher's width.
        grid_mismatch: ``resample`` the teacher's patch-token map to the student's grid
            (bilinear) when they differ, or ``error``.
    """

    mask_ratio: float = 0.9
    # cls: the ablation's winner (RESULTS.md: +2.1 kNN / +1.2 linear points over cls+patch)
    targets: Literal["cls", "patch", "cls+patch"] = "cls"
    target_norm: Literal["layernorm", "l2", "none"] = "layernorm"
    loss: Literal["smooth_l1", "mse", "cosine"] = "smooth_l1"
    smooth_l1_beta: float = 1.0
    projector_layers: int = 2
    projector_hidden_dim: int | None = None
    grid_mismatch: Literal["resample", "error"] = "resample"

    def check(self) -> None:
        """Refuse invalid MOMA options, naming the option (:func:`check_moma_config`)."""
        check_moma_config(self)


@dataclass
class CacheConfig:
    """The teacher-target cache: each frozen teacher runs once per image per cached view.

    With ``views = K > 0`` every teacher's targets on ``K`` augmented views of every training
    image are computed once (inference mode, large batches) and stored on disk; training then
    runs the student alone, on exactly those views (each regenerated from its key ``(seed,
    image, view)``; image ``i`` uses one of its ``K`` views per epoch, cycling), with fresh
    masks every step. The trade-off: the student sees ``K`` views per image instead of a new
    augmentation every epoch, for teacher work of ``K`` epochs instead of every epoch.

    Attributes:
        views: cached views per image, ``K``; 0 turns the cache off (teachers run every step);
            ``auto`` (default) caches 2 views when the run lasts more than 2 epochs (so the
            teachers run on 2 views per image instead of one per epoch: at 6 epochs 1, 2 and 6
            views gave the same accuracy, RESULTS.md), else runs them live, as for tar shards.
        dir: where caches live; ``null`` = ``targets/`` beside the run's folder
            (``<trainer.out_dir>/../targets``). Runs that share a teacher, data and view
            recipe share its cache there.
        dtype: storage dtype of the targets: ``float16`` (default), ``bfloat16`` or
            ``float32`` (exact copies of the teachers' fp32 outputs).
        batch_size: teacher batch while building; ``null`` = 1024 on a CPU, on a GPU the
            largest that fits (from 4096 down).
    """

    views: int | Literal["auto"] = "auto"
    dir: str | None = None
    dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    batch_size: int | None = None


def check_cache_config(cfg: CacheConfig) -> None:
    """Refuse invalid cache options, naming the option (raises ConfigError)."""
    if cfg.views != "auto" and (isinstance(cfg.views, bool) or int(cfg.views) < 0):
        raise ConfigError(f"cache.views must be auto or >= 0 (0 = no cache), got {cfg.views!r}")
    if cfg.dtype not in CACHE_DTYPES:
        raise ConfigError(
            f"cache.dtype must be one of {', '.join(CACHE_DTYPES)}, got {cfg.dtype!r}"
        )
    if cfg.batch_size is not None and int(cfg.batch_size) < 1:
        raise ConfigError(f"cache.batch_size must be positive or null, got {cfg.batch_size}")


def check_moma_config(cfg: MomaConfig) -> None:
    """Refuse invalid MOMA options, naming the option (raises ConfigError)."""
    try:
        check_mask_ratio(cfg.mask_ratio)
    except ValueError as e:
        raise ConfigError(f"moma.mask_ratio: {e}") from None
    choices = {
        "targets": TARGETS,
        "target_norm": TARGET_NORMS,
        "loss": LOSSES,
        "grid_mismatch": GRID_MISMATCH,
    }
    for key, allowed in choices.items():
        if getattr(cfg, key) not in allowed:
            raise ConfigError(
                f"moma.{key} must be one of {', '.join(allowed)}, got {getattr(cfg, key)!r}"
            )
    if int(cfg.projector_layers) < 0:
        raise ConfigError(f"moma.projector_layers must be >= 0, got {cfg.projector_layers}")
    if cfg.projector_hidden_dim is not None and int(cfg.projector_hidden_dim) < 1:
        raise ConfigError(
            f"moma.projector_hidden_dim must be positive or null, got {cfg.projector_hidden_dim}"
        )
    if float(cfg.smooth_l1_beta) <= 0:
        raise ConfigError(f"moma.smooth_l1_beta must be > 0, got {cfg.smooth_l1_beta}")
