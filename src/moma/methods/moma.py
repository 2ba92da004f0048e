"""MOMA distillation (arXiv 2302.02089): frozen self-supervised teachers, masked student.

One step (docs/DESIGN.md, section 1):

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

This module holds the method (:class:`MomaMethod`); its options live in
:mod:`moma.methods.moma_config`, the teachers' helpers in :mod:`moma.methods.moma_teachers`,
and the run (config, builders, :func:`~moma.commands.distill.run_moma`) in
:mod:`moma.commands.distill`.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Sequence

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from moma.errors import CheckpointError, ConfigError
from moma.methods.base import SSLMethod
from moma.methods.moma_config import MomaConfig, check_moma_config
from moma.methods.moma_loss import MomaLoss
from moma.methods.moma_teachers import Teacher, TeacherBranch, TeacherTargets, image_size
from moma.methods.optim import OptimConfig
from moma.models.checkpoint_arch import base_arch
from moma.models.heads import build_mlp
from moma.models.masking import MaskedOutput, forward_encoder_masked, gather_tokens
from moma.models.vit import BackboneConfig, describe, global_feature, grid_size, has_global_feature
from moma.moved import forwarder

log = logging.getLogger(__name__)
__getattr__ = forwarder(__name__)  # the run (config, builders, run_moma) is moma.commands.distill

# ----------------------------------------------------------------------------- building blocks


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
    arch = arch or base_arch(d["embed_dim"])
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


def _branch_keys_to_list_keys(module: MomaMethod, state_dict: dict, prefix: str, _meta) -> None:
    """State-dict hook: ``branches.<name>.teacher.*`` -> ``teachers.<i>.*`` and
    ``branches.<name>.projector.*`` -> ``projectors.<i>.*``, in the order of the lists the
    branches replaced (student, teachers, projectors, criterion)."""
    index = {name: i for i, name in enumerate(module.branches)}
    head, teachers, projectors, tail = {}, {}, {}, {}
    for k, v in state_dict.items():
        rest = k[len(prefix) :] if k.startswith(prefix) else None
        if rest is None or not rest.startswith("branches."):
            (tail if teachers or projectors else head)[k] = v
            continue
        name, part, key = rest[len("branches.") :].split(".", 2)
        out = teachers if part == "teacher" else projectors
        out[f"{prefix}{part}s.{index[name]}.{key}"] = v
    state_dict.clear()
    state_dict.update({**head, **teachers, **projectors, **tail})


def _list_keys_to_branch_keys(module: MomaMethod, state_dict: dict, prefix: str, *_) -> None:
    """Load-state-dict pre-hook, the inverse of :func:`_branch_keys_to_list_keys`."""
    names = list(module.branches)
    for k in list(state_dict):
        rest = k[len(prefix) :]
        if not k.startswith(prefix) or not rest.startswith(("teachers.", "projectors.")):
            continue
        part, i, key = rest.split(".", 2)
        if i.isdigit() and int(i) < len(names):
            state_dict[f"{prefix}branches.{names[int(i)]}.{part[:-1]}.{key}"] = state_dict.pop(k)


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

    Submodules: ``student``, ``branches`` (``nn.ModuleDict`` name -> :class:`TeacherBranch`:
    the frozen teacher, its projector, weight, record and grid), ``criterion``. State-dict keys
    are ``student.*``, ``teachers.<i>.*``, ``projectors.<i>.*`` (``i``: the teacher's position),
    as before the branches existed. ``teachers`` and ``projectors`` are ``nn.ModuleList`` views
    of the branches' modules in teacher order.
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
        bad = [n for n in names if not n or "." in n]
        if bad:
            raise ConfigError(f"teacher names must be non-empty and without '.', got {bad}")
        weights = [float(t.weight) for t in teachers]
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ConfigError(f"teacher weights must be >= 0 and not all 0, got {weights}")

        self.student = student
        s_grid, s_img = grid_size(student), image_size(student)
        self.student_grid = s_grid
        self.branches = nn.ModuleDict()
        for n, t in zip(names, teachers):
            t_grid, t_img = grid_size(t.model), image_size(t.model)
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
            if self.use_cls and not has_global_feature(t.model):
                raise ConfigError(
                    f"teacher {n!r} has no CLS token and no pooling head: use --moma.targets patch"
                )
            projector = build_projector(
                int(moma.projector_layers),
                int(student.embed_dim),
                int(t.model.embed_dim),
                moma.projector_hidden_dim,
            )
            try:
                self.branches[n] = TeacherBranch(
                    t, n, projector, s_grid, self.use_cls, self.use_patch
                )
            except KeyError:  # ModuleDict refuses names of its own attributes ("keys", "to" ...)
                raise ConfigError(
                    f"teacher name {n!r} is reserved (an attribute of torch's ModuleDict); "
                    "give the teacher another name (--teachers.name)"
                ) from None
        if self.use_cls and not has_global_feature(student):
            raise ConfigError(
                "the student has no CLS token and no pooling head: use --moma.targets patch"
            )
        # Checkpoints keep the key names of the per-teacher lists this replaced
        # (teachers.<i>.*, projectors.<i>.*): runs started before resume, files load as before.
        self.register_state_dict_post_hook(_branch_keys_to_list_keys)
        self.register_load_state_dict_pre_hook(_list_keys_to_branch_keys)
        self.criterion = MomaLoss(moma.loss, moma.target_norm, moma.smooth_l1_beta)
        self.cache_build_s: float | None = None  # set by the target cache, logged once

    # --- frozen teachers -------------------------------------------------------------------
    def train(self, mode: bool = True) -> MomaMethod:
        """Set the training mode of the student and projectors; teachers stay in ``eval()``."""
        super().train(mode)  # each branch keeps its teacher in eval()
        return self

    def on_fit_start(self) -> None:
        # The frozen teachers are in eval() on purpose: silence Lightning's generic warning.
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")

    # --- the branches as lists (teacher order) ----------------------------------------------
    @property
    def teacher_names(self) -> list[str]:
        return list(self.branches)

    @property
    def teacher_weights(self) -> list[float]:
        return [b.weight for b in self.branches.values()]

    @property
    def teacher_records(self) -> list[dict]:
        """What checkpoints keep of each teacher: name, path, sha256, weight."""
        return [b.record for b in self.branches.values()]

    @property
    def teachers(self) -> nn.ModuleList:
        """The frozen teachers in order (a view: the modules live in ``branches``)."""
        view = nn.ModuleList([b.teacher for b in self.branches.values()])
        view.training = False
        return view

    @property
    def projectors(self) -> nn.ModuleList:
        """The projectors in teacher order (a view: the modules live in ``branches``)."""
        view = nn.ModuleList([b.projector for b in self.branches.values()])
        view.training = self.training
        return view

    def branch(self, i: int) -> TeacherBranch:
        """Teacher ``i``'s branch (teacher order)."""
        return list(self.branches.values())[i]

    def trainable_modules(self) -> list[nn.Module]:
        """The optimiser sees the student and the projectors, never the teachers (the order of
        the lists this replaced, so an optimiser state saved before loads as it was)."""
        return [self.student, self.projectors]

    def export_backbone(self) -> VisionTransformer:
        """The student (projectors dropped)."""
        return self.student

    # --- stages ---------------------------------------------------------------------------
    def teacher_output(self, i: int, imgs: Tensor) -> TeacherTargets:
        """Teacher ``i``'s final-norm tokens on the full view ``imgs [N, 3, H, W]``, no grad
        (:meth:`TeacherBranch.targets`): CLS ``[N, Dt]`` and/or patch tokens resampled to the
        student's grid ``[N, Ls, Dt]`` (whichever ``moma.targets`` uses)."""
        return self.branch(i).targets(imgs)

    def teacher_targets(self, imgs: Tensor) -> list[TeacherTargets]:
        """Every teacher's targets on the full view (:meth:`teacher_output`), no grad."""
        return [b.targets(imgs) for b in self.branches.values()]

    def _forward_student(self, imgs: Tensor) -> MaskedOutput:
        """The student's masked forward: tokens ``[N, P + K, Ds]`` and ``ids_keep [N, K]``."""
        return forward_encoder_masked(self.student, imgs, self.moma_cfg.mask_ratio)

    def student_loss(self, imgs: Tensor, targets: Sequence[TeacherTargets]) -> dict[str, Tensor]:
        """The student's masked forward on ``imgs`` against the teachers' ``targets``.

        Returns the total loss and, per teacher, ``loss_<name>`` (with ``_cls`` / ``_patch``
        parts): ``loss = sum_t weight_t * loss_<t>``; ``loss_<t> = loss_<t>_cls + loss_<t>_patch``.
        """
        out = self._forward_student(imgs)
        p = self.student.num_prefix_tokens
        student_cls = global_feature(self.student, out.tokens).unsqueeze(1)  # [N, 1, Ds]
        student_patches = out.tokens[:, p:]  # [N, K, Ds]

        logs: dict[str, Tensor] = {}
        total = out.tokens.new_zeros((), dtype=torch.float32)
        for branch, tgt in zip(self.branches.values(), targets):
            name, weight, proj = branch.name, branch.weight, branch.projector
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

    def shared_step(self, batch) -> dict[str, Tensor]:
        """One batch: ``(imgs, labels)`` runs the teachers live; ``(imgs, labels, targets)``
        (the target cache's batches, targets as :meth:`teacher_targets` gives them) does not.
        """
        imgs = batch[0]
        if isinstance(imgs, list | tuple):  # a multi-view batch: MOMA uses one view
            imgs = imgs[0]
        if len(batch) > 2:
            targets = batch[2]
        else:
            with self.clock.timed("teacher", imgs.device):
                targets = self.teacher_targets(imgs)
        return self.student_loss(imgs, targets)

    def epoch_times(self, stages: dict[str, float], epoch_s: float) -> dict[str, float]:
        """Adds ``student`` (the step minus the teachers' forwards) and, once, the time the
        target cache took to build or open (``cache_build``)."""
        times = super().epoch_times(stages, epoch_s)
        times["teacher"] = stages.get("teacher", 0.0)
        times["student"] = max(0.0, stages.get("step", 0.0) - times["teacher"])
        if self.cache_build_s is not None:
            times["cache_build"], self.cache_build_s = self.cache_build_s, None
        return times

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
        if not any(k.startswith(("teachers.", "branches.")) for k in state_dict):
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
