"""``moma bench --groups '[compile]'``: steps with eager vs compiled transformer blocks.

The same modules as the MOMA rows (`moma.bench.cases`), built twice: one eager, one with
every ViT block compiled in place as ``--trainer.compile blocks`` does (`moma.train.compile`:
inductor; CUDA graphs on a GPU). Timed in one round-robin set: the two-teacher MOMA step,
its student step on cached teacher targets (the dispatch-bound part on a GPU), one teacher
forward and the MoCo v3 step. Compilation happens in the warm-up steps (give ``--warmup``
of 3 or more on a GPU: CUDA graphs are recorded on the first calls). FLOPs are not counted
again: they equal the eager rows'.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from moma.bench.cases import (
    Case,
    TrainStep,
    _step_with_cached_targets,
    autocast,
    build_moma,
    random_images,
    teacher_targets_once,
)
from moma.bench.presets import SizePreset
from moma.methods.mocov3 import MoCoV3Method
from moma.train.compile import compile_blocks


def compile_cases(
    preset: SizePreset,
    precision: str,
    batch: int,
    device: torch.device,
    seed: int,
    mask_ratio: float = 0.9,
    mode: str = "blocks",
    backend: str = "inductor",
) -> Iterator[Case]:
    """Eager and compiled (``mode``) versions of four steps, for one round-robin set."""
    t_label, t_cfg = preset.teacher
    s_label, s_cfg = preset.student
    imgs = random_images(batch, preset.img_size, device, seed)
    views = [imgs, random_images(batch, preset.img_size, device, seed + 1)]
    momentum = float(preset.mocov3.momentum)
    for compiled in (False, True):
        how = f"compiled {mode}" if compiled else "eager"
        tag = "compiled" if compiled else "eager"
        extra = {"compiled": compiled, "compile_mode": mode if compiled else "none"}
        module = build_moma(t_cfg, s_cfg, 2, mask_ratio, device)
        if compiled:
            compile_blocks(module, device, mode, backend)
        step = TrainStep(module, (imgs, None), batch, device, precision)
        model = f"2x {t_label} -> {s_label}"
        yield Case("compile", f"compile:moma:2t:{tag}", f"MOMA step, 2 teachers, {how}", model,
                   precision, batch, step, flops=False, extra=extra)  # fmt: skip
        targets = teacher_targets_once(module, imgs, precision)
        yield Case(
            "compile",
            f"compile:student:{tag}",
            f"student step (cached targets), mask {mask_ratio:g}, {how}",
            s_label,
            precision,
            batch,
            _step_with_cached_targets(module, step, targets, mask_ratio),
            flops=False,
            extra=extra,
        )
        teacher = module.branch(0).teacher

        def forward(teacher=teacher) -> Tensor:
            with torch.inference_mode(), autocast(device, precision):
                return teacher.forward_features(imgs)

        yield Case("compile", f"compile:teacher:{tag}", f"teacher forward, {how}", t_label,
                   precision, batch, forward, flops=False, extra=extra)  # fmt: skip
        moco = MoCoV3Method(preset.mocov3, s_cfg).to(device).train()
        if compiled:
            compile_blocks(moco, device, mode, backend)
        moco_step = TrainStep(moco, (views, None), batch, device, precision,
                              after_step=lambda moco=moco: moco.momentum_update(momentum))  # fmt: skip
        yield Case("compile", f"compile:mocov3:{tag}", f"MoCo v3 step, {how}", s_label,
                   precision, batch, moco_step, flops=False, extra=extra)  # fmt: skip
