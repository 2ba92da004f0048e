"""The timed steps of ``moma bench``: teacher forwards, student steps, whole training steps.

Every training step is what Lightning runs for one batch, without Lightning: the method's
``shared_step`` under autocast (bf16 when asked, as ``precision="bf16-mixed"`` does), the
backward pass, the AdamW step of the shared optimiser and its schedule, and the method's
after-step hook (MoCo v3's momentum update). Inputs are fixed random tensors already on the
device: the data pipeline is timed on its own (:mod:`moma.bench.data_cases`).

Shapes: N batch, S image side.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from moma.bench.presets import SizePreset
from moma.eval.features import autocast_context
from moma.methods.base import SSLMethod
from moma.methods.mae import MAEMethod
from moma.methods.mocov3 import MoCoV3Method
from moma.methods.moma import MomaConfig, MomaMethod, Teacher
from moma.methods.optim import build_optimizer, build_param_groups
from moma.models.vit import BackboneConfig

TEACHER_NAMES = ("mocov3", "mae")
_SCHEDULE_STEPS = 10_000  # any length: the schedule only has to be stepped


@dataclass
class Case:
    """One timed step.

    Attributes:
        group: ``teacher``, ``student``, ``moma``, ``moma-part``, ``mae``, ``mocov3``,
            ``batch`` (the batch-size sweep) or ``data``.
        key: a stable id the targets and the epoch table look rows up by.
        name: what the table shows.
        model: the backbone(s), e.g. ``ViT-B/16 -> ViT-S/16``.
        precision: ``fp32``, ``bf16`` or ``-`` (data pipeline).
        batch: images per step.
        step: runs one step.
        flops: count FLOPs for this step.
        extra: more facts for the JSON (mask ratio, number of teachers, ...).
    """

    group: str
    key: str
    name: str
    model: str
    precision: str
    batch: int
    step: Callable[[], object]
    flops: bool = True
    extra: dict = field(default_factory=dict)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` for ``precision="bf16"``, nothing for ``fp32`` (the
    evaluation's helper; it calls fp32 ``"32"``)."""
    return autocast_context(device, "bf16" if precision == "bf16" else "32")


def random_images(n: int, size: int, device: torch.device, seed: int) -> Tensor:
    """Normalised-looking random images ``[N, 3, S, S]`` on ``device``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g).to(device)


class TrainStep:
    """One optimiser step of ``module``: shared_step (autocast) + backward + AdamW + schedule.

    Args:
        module: the method, in training mode, on the device.
        batch: what ``shared_step`` takes, or a function making it (timed with the step).
        batch_size: images per step (sets the lr by the scaling rule, as in training).
        precision: ``fp32`` or ``bf16``.
        after_step: called after each optimiser step (MoCo v3's momentum update).
    """

    def __init__(
        self,
        module: SSLMethod,
        batch: tuple | Callable[[], tuple],
        batch_size: int,
        device: torch.device,
        precision: str,
        after_step: Callable[[], None] | None = None,
    ) -> None:
        self.module, self.batch = module, batch
        self.device, self.precision, self.after_step = device, precision, after_step
        groups = build_param_groups(module.trainable_modules(), module.optim_cfg.weight_decay)
        self.opt, self.sched = build_optimizer(
            groups, module.optim_cfg, batch_size, _SCHEDULE_STEPS
        )

    def with_batch(self, batch: tuple | Callable[[], tuple]) -> TrainStep:
        """The same step (module, optimiser, schedule) on another batch."""
        other = copy.copy(self)
        other.batch = batch
        return other

    def __call__(self) -> Tensor:
        batch = self.batch() if callable(self.batch) else self.batch
        with autocast(self.device, self.precision):
            loss = self.module.shared_step(batch)["loss"]
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.sched.step()
        if self.after_step is not None:
            self.after_step()
        return loss


def teacher_targets_once(module: MomaMethod, imgs: Tensor, precision: str) -> list:
    """The teachers' targets for ``imgs``, computed once (they do not depend on the mask)."""
    with autocast(imgs.device, precision):
        return module.teacher_targets(imgs)


def build_moma(
    teacher: BackboneConfig,
    student: BackboneConfig,
    num_teachers: int,
    mask_ratio: float,
    device: torch.device,
    targets: str = "cls+patch",
) -> MomaMethod:
    """A MOMA module with ``num_teachers`` random teachers of one size (weights do not
    change the cost), in training mode, on ``device``. ``targets`` defaults to cls+patch, the
    costlier targets (projectors on every visible token too), so the figures bound every
    option; it was the default when BENCHMARKS.md was first measured."""
    teachers = [
        Teacher(teacher.build(), name=TEACHER_NAMES[i % 2] + ("" if i < 2 else str(i)))
        for i in range(num_teachers)
    ]
    cfg = MomaConfig(mask_ratio=mask_ratio, targets=targets)
    module = MomaMethod(teachers, student.build(), cfg)
    return module.to(device).train()


def _step_with_cached_targets(
    module: MomaMethod, step: TrainStep, targets: list, mask_ratio: float
) -> Callable[[], Tensor]:
    """The MOMA step given precomputed targets (as the target cache's batches are): its
    student part alone (masked forward, projectors, loss, backward, optimiser)."""
    cached = step.with_batch((step.batch[0], None, targets))

    def run() -> Tensor:
        module.moma_cfg.mask_ratio = mask_ratio
        return cached()

    return run


def teacher_cases(
    preset: SizePreset,
    precision: str,
    batch: int,
    device: torch.device,
    seed: int,
    sizes: list[tuple[str, BackboneConfig]] | None = None,
) -> Iterator[Case]:
    """Full-token teacher forward (``forward_features``, inference mode) for each size
    (default: the preset's ``teacher_sizes``)."""
    imgs = random_images(batch, preset.img_size, device, seed)
    for label, cfg in preset.teacher_sizes if sizes is None else sizes:
        model = cfg.build().to(device).eval()

        def run(model=model) -> Tensor:
            with torch.inference_mode(), autocast(device, precision):
                return model.forward_features(imgs)

        yield Case("teacher", f"teacher:{label}", "teacher forward", label, precision, batch, run)
        del model


def student_cases(
    preset: SizePreset,
    precision: str,
    batch: int,
    device: torch.device,
    seed: int,
    mask_ratios: list[float],
) -> Iterator[Case]:
    """The MOMA student step alone (one teacher's cached targets) at each mask ratio."""
    t_label, t_cfg = preset.teacher
    s_label, s_cfg = preset.student
    module = build_moma(t_cfg, s_cfg, 1, 0.9, device)
    imgs = random_images(batch, preset.img_size, device, seed)
    step = TrainStep(module, (imgs, None), batch, device, precision)
    targets = teacher_targets_once(module, imgs, precision)
    for r in mask_ratios:
        run = _step_with_cached_targets(module, step, targets, float(r))
        yield Case(
            "student",
            f"student:{float(r):g}",
            f"student step, mask {float(r):g}",
            s_label,
            precision,
            batch,
            run,
            extra={"mask_ratio": float(r), "projectors": 1},
        )


def moma_cases(
    preset: SizePreset,
    precision: str,
    batch: int,
    device: torch.device,
    seed: int,
    mask_ratio: float = 0.9,
) -> Iterator[Case]:
    """Whole MOMA steps (one and two teachers) and, for each, its parts measured alone:
    the module's teacher forwards and its student step on cached targets."""
    t_label, t_cfg = preset.teacher
    students = [(preset.student, (1, 2))]
    if preset.compact_student is not None:
        students.append((preset.compact_student, (2,)))
    imgs = random_images(batch, preset.img_size, device, seed)
    # A standalone teacher forward in the same round-robin set, so that the module's teacher
    # forwards are compared with it in the same time window.
    alone = next(teacher_cases(preset, precision, batch, device, seed, [preset.teacher]))
    alone.group, alone.key = "moma-part", "teacher-alone"
    alone.name = "part: 1 teacher forward, standalone"
    yield alone
    for (s_label, s_cfg), counts in students:
        compact = preset.compact_student is not None and s_label == preset.compact_student[0]
        for n in counts:
            module = build_moma(t_cfg, s_cfg, n, mask_ratio, device)
            step = TrainStep(module, (imgs, None), batch, device, precision)
            tag = f"{n}t" + (":compact" if compact else "")
            model = f"{n}x {t_label} -> {s_label}"
            what = "1 teacher (mocov3->mae, mae->mocov3)" if n == 1 else "2 teachers (both->random)"
            extra = {"teachers": n, "mask_ratio": mask_ratio, "student": s_label}
            yield Case("moma", f"moma:{tag}", f"MOMA step, {what}", model, precision, batch,
                       step, extra=extra)  # fmt: skip

            def teachers_only(module=module) -> object:
                with autocast(device, precision):
                    return module.teacher_targets(imgs)

            yield Case("moma-part", f"moma-teachers:{tag}", f"part: {n} teacher forward(s)",
                       model, precision, batch, teachers_only, extra=extra)  # fmt: skip
            yield Case(
                "moma-part",
                f"moma-student:{tag}",
                f"part: student step ({n} projector{'s' if n > 1 else ''})",
                model,
                precision,
                batch,
                _step_with_cached_targets(
                    module, step, teacher_targets_once(module, imgs, precision), mask_ratio
                ),
                extra=extra,
            )
            del module, step


def batch_sweep_cases(
    preset: SizePreset,
    precision: str,
    batches: list[int],
    device: torch.device,
    seed: int,
    mask_ratio: float = 0.9,
) -> Iterator[Case]:
    """The two-teacher MOMA step at other batch sizes."""
    t_label, t_cfg = preset.teacher
    s_label, s_cfg = preset.student
    module = build_moma(t_cfg, s_cfg, 2, mask_ratio, device)
    for b in batches:
        imgs = random_images(b, preset.img_size, device, seed)
        step = TrainStep(module, (imgs, None), b, device, precision)
        yield Case("batch", f"batch:{b}", f"MOMA step, 2 teachers, batch {b}",
                   f"2x {t_label} -> {s_label}", precision, b, step)  # fmt: skip


def baseline_cases(
    preset: SizePreset, precision: str, batch: int, device: torch.device, seed: int
) -> Iterator[Case]:
    """MAE and MoCo v3 training steps on the student's backbone."""
    s_label, s_cfg = preset.student
    imgs = random_images(batch, preset.img_size, device, seed)
    mae = MAEMethod(preset.mae, s_cfg).to(device).train()
    step = TrainStep(mae, (imgs, None), batch, device, precision)
    dec = f"dec {preset.mae.decoder_depth}x{preset.mae.decoder_embed_dim}"
    yield Case("mae", "mae", f"MAE step, mask {preset.mae.mask_ratio:g}", f"{s_label} + {dec}",
               precision, batch, step, extra={"mask_ratio": preset.mae.mask_ratio})  # fmt: skip
    del mae, step
    mocov3 = MoCoV3Method(preset.mocov3, s_cfg).to(device).train()
    views = [imgs, random_images(batch, preset.img_size, device, seed + 1)]
    momentum = float(preset.mocov3.momentum)
    step = TrainStep(mocov3, (views, None), batch, device, precision,
                     after_step=lambda: mocov3.momentum_update(momentum))  # fmt: skip
    yield Case("mocov3", "mocov3", "MoCo v3 step, 2 views", f"{s_label} + momentum copy",
               precision, batch, step, extra={"views": 2})  # fmt: skip
