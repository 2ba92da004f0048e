"""Distillation from DINO, DINOv2 and CLS-less (SigLIP-style) teachers, alone and mixed."""

from __future__ import annotations

import math

import pytest
import torch
from families import write_family
from toy import TINY, ToyData, needs_fashion_mnist

from moma.commands.distill import StudentConfig, TeacherConfig, build_student, build_teachers
from moma.methods.moma import MomaConfig, MomaMethod, Teacher
from moma.models.checkpoint import load_backbone
from moma.run_folder import read_metrics
from moma.train import TrainerConfig, fit

# family -> the teacher's input size (the 16 px views are resized to it)
FAMILIES = {"dino": 32, "dinov2": 28, "siglip": 32}


def trainer(out, steps: int) -> TrainerConfig:
    return TrainerConfig(
        out_dir=str(out), max_steps=steps, precision="32-true", progress_bar=False,
        log_every_n_steps=1, ckpt_every_n_steps=steps,
    )  # fmt: skip


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_distils(tmp_path, family):
    path = tmp_path / f"{family}.pth"
    write_family(path, family, FAMILIES[family])
    teachers = build_teachers([TeacherConfig(str(path), name=family)])
    before = {k: v.clone() for k, v in teachers[0].model.state_dict().items()}
    student, bb = build_student(StudentConfig(backbone=TINY), img_size=16)
    start = {k: v.clone() for k, v in student.state_dict().items()}
    method = MomaMethod(teachers, student, MomaConfig(targets="cls+patch", mask_ratio=0.75))
    r = fit(method, ToyData(n=32, batch_size=8), trainer(tmp_path / "run", 4))
    assert r.global_step == 4
    losses = dict(read_metrics(tmp_path / "run", f"train/loss_{family}"))
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses.values())
    assert dict(read_metrics(tmp_path / "run", f"train/loss_{family}_cls"))  # a global target
    after = student.state_dict()
    assert any(not torch.equal(start[k], after[k]) for k in start)  # the student learned
    frozen = method.teachers[0].state_dict()
    assert all(torch.equal(before[k], frozen[k]) for k in before)


def test_student_without_cls_token_distils_its_pooled_feature(tmp_path):
    """A SigLIP-style student: its attention pool over the visible tokens is the global output."""
    write_family(tmp_path / "siglip.pth", "siglip", 16)
    write_family(tmp_path / "dino.pth", "dino", 16)
    student = load_backbone(tmp_path / "siglip.pth")
    teachers = build_teachers([TeacherConfig(str(tmp_path / "dino.pth"), name="dino")])
    method = MomaMethod(teachers, student, MomaConfig(targets="cls", mask_ratio=0.75))
    out = method.shared_step((ToyData(n=4, batch_size=4).x, None))
    out["loss"].backward()
    assert math.isfinite(out["loss"].item())
    assert student.attn_pool.latent.grad is not None  # the pool is what is trained


@needs_fashion_mnist
@pytest.mark.parametrize("cache_views", [0, 1])
def test_cli_distils_a_dinov2_p14_and_an_mae_p16_teacher_together(tmp_path, cache_views):
    """One ``moma distill``: DINOv2 (patch 14, registers; 3x3 grid) and MAE (patch 16; 2x2 grid)
    teachers, an 8x8-grid student; patch targets are resampled to the student's grid, with the
    teachers run every step or once into the target cache."""
    from moma.cli.main import main

    write_family(tmp_path / "dinov2_vits14_reg4_pretrain.pth", "dinov2", 42)
    write_family(tmp_path / "mae_pretrain_vit_base.pth", "mae", 32)
    out = tmp_path / "run"
    teachers = (
        f'[{{"path": "{tmp_path / "dinov2_vits14_reg4_pretrain.pth"}", "name": "dinov2"}}, '
        f'{{"path": "{tmp_path / "mae_pretrain_vit_base.pth"}", "name": "mae"}}]'
    )
    argv = [
        "distill", "--teachers", teachers, "--moma.targets", "cls+patch",
        "--data.subset", "64", "--data.batch_size", "16",
        "--student.backbone.depth", "2", "--student.backbone.embed_dim", "32",
        "--student.backbone.num_heads", "2",
        "--trainer.out_dir", str(out), "--trainer.max_steps", "3",
        "--trainer.precision", "32-true", "--trainer.progress_bar", "false",
        "--trainer.log_every_n_steps", "1", "--cache.views", str(cache_views),
    ]  # fmt: skip
    assert main(argv) == 0
    for name in ("dinov2", "mae"):
        for part in ("cls", "patch"):
            vals = dict(read_metrics(out, f"train/loss_{name}_{part}"))
            assert len(vals) == 3 and all(math.isfinite(v) for v in vals.values())
    student = load_backbone(out / "backbone.safetensors")
    assert student.patch_embed.grid_size == (8, 8)
    assert (tmp_path / "targets").is_dir() == bool(cache_views)  # the cache was built and used


def test_teacher_object_distils_too():
    """In-memory teachers of the new families go through the same code as files."""
    import timm

    reg = timm.create_model(
        "vit_small_patch14_reg4_dinov2", img_size=28, depth=1, embed_dim=64, num_heads=1,
        num_classes=0,
    )  # fmt: skip
    method = MomaMethod([Teacher(reg, "dinov2")], TINY.build(), MomaConfig(targets="cls+patch"))
    out = method.shared_step((ToyData(n=4, batch_size=4).x, None))
    assert math.isfinite(out["loss"].item())
