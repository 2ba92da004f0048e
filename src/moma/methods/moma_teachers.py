"""MOMA's teachers: loading, naming, fingerprints, and their geometry against the student's.

A :class:`Teacher` is a loaded frozen backbone with what identifies it in logs and checkpoints
(name, path, sha256). :func:`resample_patch_tokens` maps a teacher's patch tokens onto the
student's patch grid. Re-exported by :mod:`moma.methods.moma`.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from moma.errors import ConfigError
from moma.methods.moma_config import TeacherConfig

# The name of the module these helpers were split from, so log records (and logging configs or
# filters that select them by logger name) stay as they were.
log = logging.getLogger("moma.methods.moma")


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
