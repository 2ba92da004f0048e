"""MOMA distillation (arXiv 2302.02089): frozen self-supervised teachers, masked student.

One step (DESIGN.md section 1):

1. Every teacher (frozen, ``eval()``, ``no_grad``) runs ``forward_features`` on the full,
   unmasked view: its final-norm CLS token and patch tokens are the targets (one forward per
   teacher per batch, shared by both target kinds).
2. The student runs on the same view with MAE-style masking: position embeddings added, a
   per-sample random subset of ``mask_ratio`` of the patch tokens dropped, CLS kept; its blocks
   see only the visible tokens.
3. One projector per teacher (an MLP applied per token, student dim -> teacher dim) maps the
   student's tokens into that teacher's space. Patch targets are the teacher's patch tokens at
   the student's visible positions (``ids_keep``).
4. Targets are normalised (``target_norm``), compared with the projections (``loss``), and the
   per-teacher losses are summed with the teachers' weights.

Different patch grids: when a teacher's patch grid differs from the student's (e.g. a 14x14
ViT-B/16 teacher and a 16x16 ViT/14 student), the teacher's patch-token map ``[N, D, h, w]`` is
resampled bilinearly (``align_corners=False``) to the student's grid before gathering, and a
teacher whose input size differs from the data's gets the view resized (bilinear, antialiased)
to its own size. ``grid_mismatch="error"`` refuses both cases instead.

Checkpoints hold the student, the projectors, the optimiser and the step, never the teachers:
their names, paths and sha256 are recorded, and resuming with a different teacher list or a
changed teacher file is refused with a :class:`~moma.errors.CheckpointError`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from moma.data.config import DataConfig
from moma.errors import CheckpointError, ConfigError
from moma.methods.base import SSLMethod
from moma.methods.moma_loss import LOSSES, TARGET_NORMS, MomaLoss
from moma.methods.optim import OptimConfig
from moma.models.heads import build_mlp
from moma.models.masking import (
    MaskedOutput,
    check_mask_ratio,
    forward_encoder_masked,
    gather_tokens,
)
from moma.models.vit import BackboneConfig, describe, grid_size
from moma.train.config import TrainerConfig

if TYPE_CHECKING:
    from moma.train import RunResult

log = logging.getLogger(__name__)

TARGETS = ("cls", "patch", "cls+patch")
GRID_MISMATCH = ("resample", "error")
# timm widths -> a base arch name, for recording a checkpoint-initialised student.
_BASE_ARCH = {
    192: "vit_tiny_patch16_224",
    384: "vit_small_patch16_224",
    768: "vit_base_patch16_224",
    1024: "vit_large_patch16_224",
    1280: "vit_huge_patch14_224",
}


# ----------------------------------------------------------------------------- configs


@dataclass
class TeacherConfig:
    """One frozen teacher.

    Attributes:
        path: weights file (official MAE / MoCo v3, timm, or a moma export / checkpoint).
        format: ``auto`` | ``mae`` | ``mocov3`` | ``timm`` | ``moma`` (see ``load_backbone``).
        arch: timm base architecture hint for files that do not describe themselves.
        weight: weight of this teacher's loss in the total (default 1:1).
        name: name in logs (``train/loss_<name>``) and checkpoints; default: from the path.
    """

    path: str
    format: Literal["auto", "mae", "mocov3", "timm", "moma"] = "auto"
    arch: str | None = None
    weight: float = 1.0
    name: str | None = None


@dataclass
class StudentConfig:
    """The student backbone.

    Attributes:
        init: ``"random"`` (built from ``backbone``) or a weights file to start from (e.g. the
            MAE encoder in mechanism ``mocov3 -> mae``).
        format: checkpoint format of ``init`` (as for teachers).
        backbone: the architecture for random init. With a checkpoint the sizes come from the
            file; ``backbone.arch`` and ``backbone.num_heads`` are hints for files that do not
            record them, and ``backbone.drop_path_rate`` applies. The image size is always the
            data's (``pos_embed`` of a checkpoint is resampled if it differs).
    """

    init: str = "random"
    format: Literal["auto", "mae", "mocov3", "timm", "moma"] = "auto"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)


@dataclass
class MomaConfig:
    """MOMA options (DESIGN.md section 1); every choice the paper leaves open.

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


def _default_trainer() -> TrainerConfig:
    return TrainerConfig(out_dir="runs/moma")


@dataclass
class MomaRunConfig:
    """Everything ``moma distill`` takes (``--config file.yaml`` + dotted overrides).

    Teachers are a list. On the command line ``--teachers.path P`` changes the last teacher;
    ``--teachers '[{"path": "a.pth", "name": "mae"}, {"path": "b.pth.tar", "format": "mocov3"}]'``
    (JSON) updates a config file's list item by item when it has as many items (fields left
    out keep the file's values) and replaces it otherwise; ``--teachers+ '{"path": ...}'``
    appends a teacher (jsonargparse's list rules).
    """

    data: DataConfig = field(default_factory=DataConfig)
    teachers: list[TeacherConfig] = field(default_factory=list)
    student: StudentConfig = field(default_factory=StudentConfig)
    moma: MomaConfig = field(default_factory=MomaConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=_default_trainer)


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


# ----------------------------------------------------------------------------- teachers


@dataclass
class Teacher:
    """A loaded teacher: the backbone plus what identifies it in logs and checkpoints.

    ``sha256`` is the file's hash when the teacher came from ``path``; when ``None`` the
    method fingerprints the weights themselves (teachers built in memory).
    """

    model: VisionTransformer
    name: str | None = None
    weight: float = 1.0
    path: str | None = None
    sha256: str | None = None


@dataclass
class TeacherTargets:
    """One teacher's output on the full view (final norm, not yet normalised)."""

    cls: Tensor | None  # [N, Dt]
    patches: Tensor | None  # [N, Ls, Dt] on the student's patch grid


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 over a module's state dict (names, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        t = v.detach().cpu().contiguous().reshape(-1)
        h.update(f"{k}:{t.dtype}:{tuple(v.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def teacher_names(cfgs: Sequence[TeacherConfig]) -> list[str]:
    """Names for the teachers: ``name`` if set, else the file stem (``parent_stem`` when the
    stems collide, e.g. ``mae_backbone`` and ``mocov3_backbone``), else ``teacher<i>``."""

    def clean(s: str) -> str:
        return re.sub(r"[^A-Za-z0-9_]+", "_", s).strip("_") or "teacher"

    explicit = [c.name for c in cfgs if c.name]
    if len(set(explicit)) != len(explicit):
        raise ConfigError(f"teachers: names must be unique, got {explicit}")
    stems = [clean(Path(c.path).name.split(".")[0]) for c in cfgs]
    names: list[str] = []
    for i, c in enumerate(cfgs):
        if c.name:
            names.append(c.name)
            continue
        name = stems[i]
        if stems.count(name) > 1 or name in explicit:
            name = clean(f"{Path(c.path).parent.name}_{name}")
        if name in names or name in explicit:
            name = f"teacher{i}"
        names.append(name)
    return names


def _has_cls(vit: VisionTransformer) -> bool:
    return bool(getattr(vit, "has_class_token", vit.cls_token is not None))


def _img_size(vit: VisionTransformer) -> tuple[int, int]:
    return tuple(int(s) for s in vit.patch_embed.img_size)


def resample_patch_tokens(tokens: Tensor, src: tuple[int, int], dst: tuple[int, int]) -> Tensor:
    """Bilinearly resample patch tokens ``[N, h*w, D]`` on grid ``src`` to grid ``dst``.

    The tokens are laid out as the map ``[N, D, h, w]`` (row-major, as timm flattens them) and
    resized with ``align_corners=False``; returns ``[N, h'*w', D]``.
    """
    if tuple(src) == tuple(dst):
        return tokens
    n, length, d = tokens.shape
    fmap = tokens.transpose(1, 2).reshape(n, d, src[0], src[1])  # [N, D, h, w]
    fmap = F.interpolate(fmap.float(), size=dst, mode="bilinear", align_corners=False)
    return fmap.flatten(2).transpose(1, 2)  # [N, h'*w', D]


def build_projector(
    num_layers: int, in_dim: int, out_dim: int, hidden_dim: int | None = None
) -> nn.Module:
    """Per-token projector student dim -> teacher dim (an MLP with LayerNorm + GELU).

    ``num_layers=0`` is the identity (widths must agree), ``1`` a single Linear.
    """
    if num_layers == 0:
        if in_dim != out_dim:
            raise ConfigError(
                f"moma.projector_layers=0 needs equal widths, but student {in_dim} != teacher "
                f"{out_dim}"
            )
        return nn.Identity()
    hidden = int(hidden_dim) if hidden_dim else 2 * out_dim
    return build_mlp(num_layers, in_dim, hidden, out_dim, norm="ln", last_norm=False)


def backbone_config_of(vit: VisionTransformer, arch: str | None = None) -> dict:
    """The BackboneConfig fields describing ``vit`` (recorded so ``load_backbone`` can rebuild it)."""
    d = describe(vit)
    arch = arch or _BASE_ARCH.get(d["embed_dim"], "vit_base_patch16_224")
    cfg = BackboneConfig(
        arch=arch,
        img_size=d["img_size"],
        patch_size=d["patch_size"],
        depth=d["depth"],
        embed_dim=d["embed_dim"],
        num_heads=d["num_heads"],
        mlp_ratio=d["mlp_ratio"],
    )
    return dataclasses.asdict(cfg)


# ----------------------------------------------------------------------------- the method


class MomaMethod(SSLMethod):
    """MOMA: distil frozen teachers into a student that sees a masked view.

    Args:
        teachers: the loaded teachers (frozen here: ``requires_grad=False``, always ``eval()``).
        student: the student backbone (trained).
        moma: the MOMA options.
        optim: optimiser options (only the student and the projectors are optimised).
        backbone_cfg: BackboneConfig fields of the student, recorded in checkpoints; default:
            read from ``student``.

    Submodules: ``student``, ``teachers`` (``nn.ModuleList``), ``projectors`` (one per teacher,
    ``nn.ModuleList``), ``criterion``.
    """

    name = "moma"
    backbone_prefix = "student."

    def __init__(
        self,
        teachers: Sequence[Teacher],
        student: VisionTransformer,
        moma: MomaConfig | None = None,
        optim: OptimConfig | None = None,
        backbone_cfg: dict | None = None,
    ) -> None:
        moma = moma if moma is not None else MomaConfig()
        super().__init__(optim or OptimConfig(), backbone_cfg or backbone_config_of(student))
        check_moma_config(moma)
        if not teachers:
            raise ConfigError("MOMA needs at least one teacher: --teachers '[{\"path\": ...}]'")
        if any(t.model is student for t in teachers):
            raise ConfigError("a teacher cannot be the student module itself: pass a copy")
        self.moma_cfg = moma
        self.use_cls = moma.targets in ("cls", "cls+patch")
        self.use_patch = moma.targets in ("patch", "cls+patch")

        names = [t.name or f"teacher{i}" for i, t in enumerate(teachers)]
        if len(set(names)) != len(names):
            raise ConfigError(f"teacher names must be unique, got {names}")
        weights = [float(t.weight) for t in teachers]
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ConfigError(f"teacher weights must be >= 0 and not all 0, got {weights}")
        self.teacher_names = names
        self.teacher_weights = weights

        self.student = student
        self.teachers = nn.ModuleList([t.model for t in teachers])
        self.teachers.requires_grad_(False)
        self.teachers.eval()
        self.teacher_records = [
            {
                "name": n,
                "path": t.path,
                "sha256": t.sha256 or weights_sha256(t.model),
                "sha256_of": "file" if t.sha256 else "weights",
                "weight": w,
            }
            for n, t, w in zip(names, teachers, weights)
        ]

        s_grid, s_img = grid_size(student), _img_size(student)
        self._student_grid = s_grid
        self._teacher_grids: list[tuple[int, int]] = []
        self._teacher_imgs: list[tuple[int, int]] = []
        for n, t in zip(names, self.teachers):
            t_grid, t_img = grid_size(t), _img_size(t)
            if (t_grid != s_grid or t_img != s_img) and moma.grid_mismatch == "error":
                raise ConfigError(
                    f"teacher {n!r} has a {t_grid[0]}x{t_grid[1]} patch grid on {t_img[0]}px "
                    f"images, the student a {s_grid[0]}x{s_grid[1]} grid on {s_img[0]}px: use "
                    "--moma.grid_mismatch resample to resample the teacher's tokens"
                )
            if t_grid != s_grid:
                log.info(
                    "teacher %r: patch tokens resampled bilinearly from %s to the student's %s grid",
                    n,
                    t_grid,
                    s_grid,
                )
            if t_img != s_img:
                log.info("teacher %r: input resized from %s to its own %s", n, s_img, t_img)
            if self.use_cls and not _has_cls(t):
                raise ConfigError(f"teacher {n!r} has no CLS token: use --moma.targets patch")
            self._teacher_grids.append(t_grid)
            self._teacher_imgs.append(t_img)
        if self.use_cls and not _has_cls(student):
            raise ConfigError("the student has no CLS token: use --moma.targets patch")

        self.projectors = nn.ModuleList(
            [
                build_projector(
                    int(moma.projector_layers),
                    int(student.embed_dim),
                    int(t.embed_dim),
                    moma.projector_hidden_dim,
                )
                for t in self.teachers
            ]
        )
        self.criterion = MomaLoss(moma.loss, moma.target_norm, moma.smooth_l1_beta)

    # --- frozen teachers -------------------------------------------------------------------
    def train(self, mode: bool = True) -> MomaMethod:
        """Set the training mode of the student and projectors; teachers stay in ``eval()``."""
        super().train(mode)
        self.teachers.eval()
        return self

    def on_fit_start(self) -> None:
        # The frozen teachers are in eval() on purpose: silence Lightning's generic warning.
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")

    def trainable_modules(self) -> list[nn.Module]:
        """The optimiser sees the student and the projectors, never the teachers."""
        return [self.student, self.projectors]

    def export_backbone(self) -> VisionTransformer:
        """The student (projectors dropped)."""
        return self.student

    # --- forward ------------------------------------------------------------------------------
    @torch.no_grad()
    def _forward_teacher(self, imgs: Tensor) -> list[TeacherTargets]:
        """Each teacher's final-norm tokens on the full view, patches on the student's grid.

        ``imgs``: ``[N, 3, H, W]``. Runs under the caller's autocast (bf16 when the trainer's
        precision says so).
        """
        out: list[TeacherTargets] = []
        for teacher, t_grid, t_img in zip(self.teachers, self._teacher_grids, self._teacher_imgs):
            x = imgs
            if tuple(x.shape[-2:]) != t_img:
                x = F.interpolate(
                    x, size=t_img, mode="bilinear", align_corners=False, antialias=True
                )
            tokens = teacher.forward_features(x)  # [N, P + Lt, Dt]
            cls = tokens[:, 0] if self.use_cls else None  # [N, Dt]
            patches = None
            if self.use_patch:
                patches = tokens[:, teacher.num_prefix_tokens :]  # [N, Lt, Dt]
                patches = resample_patch_tokens(patches, t_grid, self._student_grid)  # [N, Ls, Dt]
            out.append(TeacherTargets(cls, patches))
        return out

    def _forward_student(self, imgs: Tensor) -> MaskedOutput:
        """The student's masked forward: tokens ``[N, P + K, Ds]`` and ``ids_keep [N, K]``."""
        return forward_encoder_masked(self.student, imgs, self.moma_cfg.mask_ratio)

    def shared_step(self, batch) -> dict[str, Tensor]:
        """Total loss and, per teacher, ``loss_<name>`` (with ``_cls`` / ``_patch`` parts).

        ``loss = sum_t weight_t * loss_<t>``; ``loss_<t> = loss_<t>_cls + loss_<t>_patch``.
        """
        imgs = batch[0]
        if isinstance(imgs, list | tuple):  # a multi-view batch: MOMA uses one view
            imgs = imgs[0]
        targets = self._forward_teacher(imgs)
        out = self._forward_student(imgs)
        p = self.student.num_prefix_tokens
        student_cls = out.tokens[:, :1]  # [N, 1, Ds]
        student_patches = out.tokens[:, p:]  # [N, K, Ds]

        logs: dict[str, Tensor] = {}
        total = out.tokens.new_zeros((), dtype=torch.float32)
        for name, weight, proj, tgt in zip(
            self.teacher_names, self.teacher_weights, self.projectors, targets
        ):
            parts: dict[str, Tensor] = {}
            if self.use_cls:
                pred = proj(student_cls)  # [N, 1, Dt]
                parts["cls"] = self.criterion(pred, tgt.cls.unsqueeze(1))
            if self.use_patch:
                pred = proj(student_patches)  # [N, K, Dt]
                target = gather_tokens(tgt.patches, out.ids_keep)  # [N, K, Dt]
                parts["patch"] = self.criterion(pred, target)
            loss_t = sum(parts.values())
            logs[f"loss_{name}"] = loss_t.detach()
            if len(parts) > 1:
                for kind, v in parts.items():
                    logs[f"loss_{name}_{kind}"] = v.detach()
            total = total + weight * loss_t
        return {"loss": total, **logs}

    # --- checkpoints ---------------------------------------------------------------------------
    def extra_checkpoint_meta(self) -> dict:
        """Teacher names, paths, weights and sha256 (the teachers' weights are not saved)."""
        return {"teachers": [dict(r) for r in self.teacher_records]}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        sd = checkpoint.get("state_dict")
        if isinstance(sd, dict):
            for k in [k for k in sd if k.startswith("teachers.")]:
                del sd[k]

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load a state dict that may lack the teachers (training checkpoints never hold them):
        the teachers already loaded are kept; everything else is checked as usual."""
        state_dict = dict(state_dict)
        if not any(k.startswith("teachers.") for k in state_dict):
            state_dict.update(self.teachers.state_dict(prefix="teachers."))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def check_resume(self, checkpoint: dict) -> None:
        """Refuse a checkpoint made with other teachers or with a teacher file since changed."""
        saved = (checkpoint.get("moma") or {}).get("teachers")
        if not isinstance(saved, list):
            raise CheckpointError("the checkpoint records no MOMA teachers; it is not a MOMA run")
        have = [r["name"] for r in self.teacher_records]
        was = [str(r.get("name")) for r in saved]
        if have != was:
            raise CheckpointError(
                f"the teacher list differs from the checkpoint's: run started with {was}, now "
                f"{have}; restore the teachers or start a new run (another --trainer.out_dir "
                "or --trainer.resume never)"
            )
        for now, then in zip(self.teacher_records, saved):
            if now["sha256"] != then.get("sha256"):
                what = now["path"] or "its weights"
                raise CheckpointError(
                    f"teacher {now['name']!r} ({what}) changed since the run started: sha256 "
                    f"{str(then.get('sha256'))[:12]}... at the start, {now['sha256'][:12]}... "
                    "now; restore the original file or start a new run (another "
                    "--trainer.out_dir or --trainer.resume never)"
                )
            if now["path"] != then.get("path"):
                log.info(
                    "teacher %r moved from %s to %s (same sha256)",
                    now["name"],
                    then.get("path"),
                    now["path"],
                )


# ----------------------------------------------------------------------------- running


def build_teachers(cfgs: Sequence[TeacherConfig]) -> list[Teacher]:
    """Load each teacher with ``load_backbone`` and hash its file."""
    from moma.models.checkpoint import load_backbone, sha256_file

    if not cfgs:
        raise ConfigError(
            'MOMA needs at least one teacher: --teachers \'[{"path": "teacher.pth"}]\''
        )
    teachers = []
    for cfg, name in zip(cfgs, teacher_names(cfgs)):
        digest = sha256_file(cfg.path)
        model = load_backbone(cfg.path, arch=cfg.arch, format=cfg.format)
        teachers.append(Teacher(model, name, float(cfg.weight), str(cfg.path), digest))
        log.info("teacher %r: %s (sha256 %s...)", name, cfg.path, digest[:12])
    return teachers


def build_student(
    cfg: StudentConfig, img_size: int | None = None
) -> tuple[VisionTransformer, dict]:
    """The student backbone and its BackboneConfig fields (random init or from a file).

    ``img_size`` (the data's) wins over ``cfg.backbone.img_size``; a checkpoint's
    ``pos_embed`` is resampled to it when it differs.
    """
    bb = cfg.backbone
    if img_size is not None and bb.img_size != img_size:
        log.info("student.backbone.img_size %s -> %s (the data's)", bb.img_size, img_size)
        bb = dataclasses.replace(bb, img_size=img_size)
    if cfg.init == "random":
        return bb.build(), dataclasses.asdict(bb)
    from moma.models.checkpoint import load_backbone

    overrides: dict = {"drop_path_rate": bb.drop_path_rate}
    if bb.num_heads is not None:
        overrides["num_heads"] = bb.num_heads
    if img_size is not None:
        overrides["img_size"] = img_size
    student = load_backbone(cfg.init, arch=bb.arch, format=cfg.format, **overrides)
    log.info("student initialised from %s", cfg.init)
    return student, backbone_config_of(student)


def build_moma(cfg: MomaRunConfig) -> MomaMethod:
    """The MOMA module of a run config: teachers and student loaded, not yet trained."""
    teachers = build_teachers(cfg.teachers)
    student, bb = build_student(cfg.student, img_size=cfg.data.img_size)
    return MomaMethod(teachers, student, cfg.moma, cfg.optim, backbone_cfg=bb)


def run_moma(cfg: MomaRunConfig) -> RunResult:
    """``moma distill``: train, checkpoint (resumable), export the student."""
    from moma.cli.main import config_to_dict
    from moma.data import SSLDataModule
    from moma.train import fit

    check_moma_config(cfg.moma)
    module = build_moma(cfg)
    datamodule = SSLDataModule(cfg.data, views=1, augment="mae")
    return fit(module, datamodule, cfg.trainer, config_to_dict(cfg))
