"""``moma distill``: a MOMA run (teachers and student loaded, trained, exported), and the
build of its teacher-target cache without training.

The run config (:class:`MomaRunConfig`: teachers, student, MOMA options, optimiser, trainer,
cache) lives here with the builders that turn it into a :class:`~moma.methods.moma.MomaMethod`;
the method, its options (:class:`~moma.methods.moma_config.MomaConfig`) and the cache's pieces
it needs at fit time stay in :mod:`moma.methods`.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from timm.models.vision_transformer import VisionTransformer

from moma.commands.record import config_to_dict
from moma.data import SSLDataModule
from moma.data.config import DataConfig
from moma.data.splits import count_train_images
from moma.errors import ConfigError
from moma.methods.moma import MomaMethod, backbone_config_of
from moma.methods.moma_cache import (
    TargetCache,
    cache_dir,
    precision_context,
    prepare_stores,
    run_device,
)
from moma.methods.moma_config import CacheConfig, MomaConfig
from moma.methods.moma_teachers import Teacher
from moma.methods.optim import OptimConfig
from moma.models.attention import set_attention
from moma.models.checkpoint import load_backbone, sha256_file
from moma.models.vit import BackboneConfig
from moma.train import RunResult, fit
from moma.train.config import TrainerConfig
from moma.validation import prepare_run

log = logging.getLogger(__name__)


@dataclass
class TeacherConfig:
    """One frozen teacher.

    Attributes:
        path: weights file (official MAE / MoCo v3 / DINO / DINOv2, timm, OpenCLIP, or a moma
            export / checkpoint).
        format: ``auto`` | ``mae`` | ``mocov3`` | ``timm`` | ``moma`` | ``dino`` | ``open_clip``
            (see ``load_backbone``).
        arch: timm base architecture hint for files that do not describe themselves.
        weight: weight of this teacher's loss in the total (default 1:1).
        name: name in logs (``train/loss_<name>``) and checkpoints; default: from the path.
    """

    path: str
    format: Literal["auto", "mae", "mocov3", "timm", "moma", "dino", "open_clip"] = "auto"
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
    format: Literal["auto", "mae", "mocov3", "timm", "moma", "dino", "open_clip"] = "auto"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)


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
    cache: CacheConfig = field(default_factory=CacheConfig)


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


def build_teachers(cfgs: Sequence[TeacherConfig]) -> list[Teacher]:
    """Load each teacher with ``load_backbone`` and hash its file."""
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


AUTO_VIEWS = 2  # cache.views auto: this many views, when the run lasts longer than that


def resolve_views(cfg: MomaRunConfig) -> int:
    """``cache.views`` as a number: ``auto`` is `AUTO_VIEWS` when the run lasts more epochs
    than that (the cache then saves teacher forwards), else 0 (teachers live)."""
    if cfg.cache.views != "auto":
        return int(cfg.cache.views)
    t = cfg.trainer
    if t.max_steps <= 0:
        epochs = float(t.max_epochs)
    else:
        n = count_train_images(cfg.data)
        if n is None:
            log.info("target cache off (cache.views auto): tar shards are read in order")
            return 0
        devices = t.devices if isinstance(t.devices, int) and t.devices > 0 else 1
        per_step = cfg.data.batch_size * devices * t.num_nodes * t.accumulate_grad_batches
        epochs = t.max_steps / max(1, n // per_step)
    if epochs > AUTO_VIEWS:
        log.info("target cache: %d views (cache.views auto; %.1f epochs)", AUTO_VIEWS, epochs)
        return AUTO_VIEWS
    log.info("target cache off (cache.views auto): %.1f epochs would not reuse a view", epochs)
    return 0


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
    overrides: dict = {"drop_path_rate": bb.drop_path_rate}
    if bb.num_heads is not None:
        overrides["num_heads"] = bb.num_heads
    if img_size is not None:
        overrides["img_size"] = img_size
    student = load_backbone(cfg.init, arch=bb.arch, format=cfg.format, **overrides)
    log.info("student initialised from %s", cfg.init)
    used = {**backbone_config_of(student), "drop_path_rate": bb.drop_path_rate}
    ignored = [
        f"{k}={getattr(bb, k)} (the file's: {used[k]})"
        for k in ("patch_size", "depth", "embed_dim", "num_heads", "mlp_ratio")
        if getattr(bb, k) is not None and getattr(bb, k) != used[k]
    ]
    if ignored:  # the file sets the architecture; say so rather than train another one
        log.warning(
            "student.init %s sets the student's architecture; ignored: student.backbone.%s",
            cfg.init,
            ", student.backbone.".join(ignored),
        )
    return student, used


def build_moma(cfg: MomaRunConfig) -> MomaMethod:
    """The MOMA module of a run config: teachers and student loaded, not yet trained."""
    teachers = build_teachers(cfg.teachers)
    student, bb = build_student(cfg.student, img_size=cfg.data.img_size)
    return MomaMethod(teachers, student, cfg.moma, cfg.optim, backbone_cfg=bb)


def run_moma(cfg: MomaRunConfig) -> RunResult:
    """``moma distill``: train, checkpoint (resumable), export the student."""
    cfg = prepare_run(cfg)  # paths expanded, values checked, seeded before the models are built
    module = build_moma(cfg)
    views = resolve_views(cfg)
    datamodule = SSLDataModule(cfg.data, views=1, augment="mae", keyed_views=views)
    callbacks = []
    if views:
        root = cache_dir(cfg.cache, cfg.trainer.out_dir)
        out = Path(cfg.trainer.out_dir)
        cache = dataclasses.replace(cfg.cache, views=views)
        callbacks.append(TargetCache(cache, root, out, cfg.trainer.progress_bar))
    config = config_to_dict(cfg)
    config["student"]["backbone"] = dict(module.backbone_cfg)  # what was built, not asked for
    return fit(module, datamodule, cfg.trainer, config, callbacks)


def build_target_cache(cfg: MomaRunConfig) -> list[dict]:
    """Build (or check and reuse) the target stores of a distill config's teachers, without
    training: what a ``moma distill`` with the same config would find ready. Returns the
    per-teacher records of :func:`prepare_stores`."""
    cfg = prepare_run(cfg)  # paths expanded, values checked, seeded before the models are built
    views = resolve_views(cfg)
    if views < 1:
        raise ConfigError(f"cache.views is {cfg.cache.views!r}: no target cache to build")
    cfg = dataclasses.replace(cfg, cache=dataclasses.replace(cfg.cache, views=views))
    module = build_moma(cfg)
    device = run_device(cfg.trainer.accelerator)
    module.to(device).eval()
    set_attention(module, device, cfg.trainer.attention)
    dm = SSLDataModule(cfg.data, views=1, augment="mae", keyed_views=views)
    dm.setup("fit")
    root = cache_dir(cfg.cache, cfg.trainer.out_dir)
    precision = precision_context(cfg.trainer.precision, device)
    return prepare_stores(
        module, dm, cfg.cache, root, device, precision, progress=cfg.trainer.progress_bar
    )
