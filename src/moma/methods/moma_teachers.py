"""MOMA's teachers: what identifies them, fingerprints, their geometry against the student's,
and the branch each one is in a :class:`~moma.methods.moma.MomaMethod`.

A :class:`Teacher` is a loaded frozen backbone with what identifies it in logs and checkpoints
(name, path, sha256); a :class:`TeacherBranch` holds it with its projector, weight and grid. :func:`resample_patch_tokens` maps a teacher's patch tokens onto the
student's patch grid. Loading teachers from a run config is the command's job
(:func:`moma.commands.distill.build_teachers`).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from moma.models.vit import global_feature, grid_size
from moma.moved import forwarder

# The name of the module these helpers were split from, so log records (and logging configs or
# filters that select them by logger name) stay as they were.
log = logging.getLogger("moma.methods.moma")
__getattr__ = forwarder(__name__)  # loading teachers moved to moma.commands.distill


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


def image_size(vit: VisionTransformer) -> tuple[int, int]:
    """The input size ``(H, W)`` a ViT was built for."""
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


class TeacherBranch(nn.Module):
    """One teacher's branch of MOMA: the frozen teacher, the projector that maps the student's
    tokens into its space, its loss weight, its name and record, and its geometry.

    Submodules: ``teacher`` (frozen: ``requires_grad=False``, always ``eval()``) and
    ``projector`` (trained). ``record`` is what checkpoints keep of the teacher (name, path,
    sha256, weight), never its weights.
    """

    def __init__(
        self,
        teacher: Teacher,
        name: str,
        projector: nn.Module,
        student_grid: tuple[int, int],
        use_cls: bool,
        use_patch: bool,
    ) -> None:
        super().__init__()
        self.teacher = teacher.model
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.projector = projector
        self.name = name
        self.weight = float(teacher.weight)
        self.record = {
            "name": name,
            "path": teacher.path,
            "sha256": teacher.sha256 or weights_sha256(teacher.model),
            "sha256_of": "file" if teacher.sha256 else "weights",
            "weight": self.weight,
        }
        self.grid = grid_size(self.teacher)  # its patch grid (h, w)
        self.img_size = image_size(self.teacher)  # the input size it was built for
        self.student_grid = tuple(student_grid)
        self.use_cls, self.use_patch = use_cls, use_patch

    def train(self, mode: bool = True) -> TeacherBranch:
        """Set the projector's training mode; the teacher stays in ``eval()``."""
        super().train(mode)
        self.teacher.eval()
        return self

    @torch.no_grad()
    def targets(self, imgs: Tensor) -> TeacherTargets:
        """The teacher's final-norm tokens on the full view ``imgs [N, 3, H, W]``: CLS
        ``[N, Dt]`` and/or patch tokens resampled to the student's grid ``[N, Ls, Dt]``.
        Runs under the caller's autocast."""
        x = imgs
        if tuple(x.shape[-2:]) != self.img_size:
            x = F.interpolate(
                x, size=self.img_size, mode="bilinear", align_corners=False, antialias=True
            )
        tokens = self.teacher.forward_features(x)  # [N, P + Lt, Dt]
        cls = global_feature(self.teacher, tokens) if self.use_cls else None  # [N, Dt]
        patches = None
        if self.use_patch:
            patches = tokens[:, self.teacher.num_prefix_tokens :]  # [N, Lt, Dt]
            patches = resample_patch_tokens(patches, self.grid, self.student_grid)  # [N, Ls, Dt]
        return TeacherTargets(cls, patches)
