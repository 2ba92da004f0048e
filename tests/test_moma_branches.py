"""MomaMethod's teacher branches: one module per teacher (frozen teacher, projector, weight,
name, geometry) in a ModuleDict, with the checkpoint keys of the runs made before them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from moma.errors import ConfigError
from moma.methods.moma import MomaConfig, MomaMethod, Teacher
from moma.methods.moma_teachers import TeacherBranch

# `name shape` of every state-dict entry of the method below, written by the code before the
# branches (main at 29213cc: parallel ``teachers`` / ``projectors`` ModuleLists).
BEFORE = Path(__file__).parent / "data" / "moma_state_dict_before_branches.txt"


def method(tiny_vit, seed: int = 0) -> MomaMethod:
    torch.manual_seed(seed)
    teachers = [Teacher(tiny_vit(depth=1), "a"), Teacher(tiny_vit(depth=1, embed_dim=48), "b")]
    return MomaMethod(teachers, tiny_vit(depth=1), MomaConfig(targets="cls+patch"))


def test_state_dict_keys_are_those_of_runs_made_before_the_branches(tiny_vit):
    sd = method(tiny_vit).state_dict()
    now = [f"{k} {tuple(v.shape)}" for k, v in sd.items()]
    assert now == BEFORE.read_text().splitlines()  # names, shapes and order


def test_a_state_dict_saved_before_the_branches_loads_into_them(tiny_vit):
    saved = method(tiny_vit, seed=1).state_dict()  # teachers.<i>.*, projectors.<i>.* keys
    training_ckpt = {k: v for k, v in saved.items() if not k.startswith("teachers.")}
    m = method(tiny_vit, seed=2)
    teacher_b = {k: v.clone() for k, v in m.branches["b"].teacher.state_dict().items()}
    m.load_state_dict(training_ckpt)  # a training checkpoint never holds the teachers
    for k, v in m.branches["b"].projector.state_dict().items():
        assert torch.equal(v, saved[f"projectors.1.{k}"])
    assert all(
        torch.equal(v, teacher_b[k]) for k, v in m.branches["b"].teacher.state_dict().items()
    )
    m.load_state_dict(saved)  # an old full state dict (teachers included) loads too
    for k, v in m.branches["a"].teacher.state_dict().items():
        assert torch.equal(v, saved[f"teachers.0.{k}"])


def test_a_branch_holds_its_teacher_projector_weight_and_geometry(tiny_vit):
    m = MomaMethod(
        [Teacher(tiny_vit(), "a"), Teacher(tiny_vit(img_size=32, patch_size=8), "b", weight=0.5)],
        tiny_vit(),
        MomaConfig(targets="cls+patch"),
    )
    assert list(m.branches) == m.teacher_names == ["a", "b"]
    b = m.branches["b"]
    assert isinstance(b, TeacherBranch) and b is m.branch(1)
    assert (b.weight, b.grid, b.img_size, b.student_grid) == (0.5, (4, 4), (32, 32), (4, 4))
    assert b.record["name"] == "b" and b.record["weight"] == 0.5
    assert m.teachers[1] is b.teacher and m.projectors[1] is b.projector
    m.train()
    assert not b.teacher.training and b.projector.training
    imgs = torch.randn(2, 3, 16, 16)
    direct, staged = b.targets(imgs), m.teacher_output(1, imgs)
    assert torch.equal(direct.cls, staged.cls) and torch.equal(direct.patches, staged.patches)
    assert staged.patches.shape == (2, 16, 32)  # resampled onto the student's 4x4 grid


@pytest.mark.parametrize("name", ["a.b", "keys"])
def test_a_teacher_name_that_cannot_name_a_branch_is_refused(tiny_vit, name):
    with pytest.raises(ConfigError, match="teacher name"):
        MomaMethod([Teacher(tiny_vit(), name)], tiny_vit())
