"""MOMA method: frozen teachers, masked student, targets, projectors, loss (no training loop)."""

import copy

import pytest
import torch
from toy import TINY

from moma.commands.distill import TeacherConfig, teacher_names
from moma.errors import ConfigError
from moma.methods.moma import MomaConfig, MomaMethod, Teacher
from moma.methods.moma_loss import MomaLoss, normalize_target
from moma.methods.moma_teachers import resample_patch_tokens
from moma.methods.optim import build_param_groups


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: with 2 intra-op threads on 2 busy shared cores, OpenMP barriers make these
    steps ~20x slower (measured); one thread is as fast when the machine is idle."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def vit(**kw):
    cfg = copy.copy(TINY)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg.build()


def imgs(n=4, size=16):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def identity_projectors(method):
    with torch.no_grad():
        for proj in method.projectors:
            lin = proj[0]
            lin.weight.copy_(torch.eye(lin.out_features, lin.in_features))
            lin.bias.zero_()


def test_teachers_frozen_eval_and_never_trainable():
    method = MomaMethod([Teacher(vit(), "a"), Teacher(vit(), "b")], vit())
    method.train()  # what Lightning does before training
    assert method.student.training and method.projectors.training
    for t in method.teachers:
        assert not t.training and not any(m.training for m in t.modules())
        assert not any(p.requires_grad for p in t.parameters())
    teacher_ids = {id(p) for p in method.teachers.parameters()}
    groups = build_param_groups(method.trainable_modules(), 0.05)
    opt_ids = {id(p) for g in groups for p in g["params"]}
    assert opt_ids and not (opt_ids & teacher_ids)
    expected = {id(p) for p in method.student.parameters()}
    expected |= {id(p) for p in method.projectors.parameters()}
    assert opt_ids == expected

    before = [p.detach().clone() for p in method.teachers.parameters()]
    out = method.shared_step((imgs(), None))
    out["loss"].backward()
    assert all(p.grad is None for p in method.teachers.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, method.teachers.parameters()))


@pytest.mark.parametrize("ratio", [0.0, 0.75, 0.9])
def test_student_sees_only_visible_tokens(ratio):
    teacher, student = vit(img_size=32), vit(img_size=32)  # 8x8 = 64 patches
    method = MomaMethod([Teacher(teacher, "t")], student, MomaConfig(mask_ratio=ratio))
    seen: dict[str, int] = {}

    def counter(key):
        def hook(module, args):
            seen[key] = args[0].shape[1]

        return hook

    student.blocks[0].register_forward_pre_hook(counter("student"))
    teacher.blocks[0].register_forward_pre_hook(counter("teacher"))
    method.shared_step((imgs(size=32), None))
    assert seen["teacher"] == 1 + 64  # the teacher sees the full view
    assert seen["student"] == 1 + int(64 * (1 - ratio))  # CLS + visible patches only
    assert (seen["student"] - 1) / 64 == pytest.approx(1 - ratio, abs=1 / 64)


@pytest.mark.parametrize("loss", ["smooth_l1", "mse", "cosine"])
def test_copied_student_identity_projector_zero_loss(loss):
    teacher = vit()
    cfg = MomaConfig(mask_ratio=0.0, projector_layers=1, target_norm="layernorm", loss=loss)
    method = MomaMethod([Teacher(teacher, "t")], copy.deepcopy(teacher), cfg)
    identity_projectors(method)
    method.train()
    x = imgs()
    zero = method.shared_step((x, None))["loss"]
    assert zero.item() < 1e-5
    with torch.no_grad():
        method.student.blocks[0].attn.qkv.weight.add_(
            0.5 * torch.randn_like(method.student.blocks[0].attn.qkv.weight)
        )
    assert method.shared_step((x, None))["loss"].item() > 1e-3


def test_zero_projector_layers_is_identity():
    teacher = vit()
    cfg = MomaConfig(mask_ratio=0.0, projector_layers=0)
    method = MomaMethod([Teacher(teacher, "t")], copy.deepcopy(teacher), cfg)
    assert method.shared_step((imgs(), None))["loss"].item() < 1e-5
    with pytest.raises(ConfigError, match="equal widths"):
        MomaMethod([Teacher(vit(embed_dim=48), "t")], vit(), cfg)


def test_two_teachers_smaller_student_weighted_sum():
    big = vit(embed_dim=64, depth=3, num_heads=4)
    wide = vit(embed_dim=48, num_heads=3)
    student = vit(embed_dim=16, depth=1, num_heads=1)  # smaller in width, depth and heads
    method = MomaMethod(
        [Teacher(big, "big", 1.0), Teacher(wide, "wide", 0.25)],
        student,
        MomaConfig(targets="cls+patch"),
    )
    assert len(method.projectors) == 2
    assert method.projectors[0](torch.zeros(2, 3, 16)).shape == (2, 3, 64)
    assert method.projectors[1](torch.zeros(2, 3, 16)).shape == (2, 3, 48)
    out = method.shared_step((imgs(), None))
    assert set(out) >= {"loss", "loss_big", "loss_wide", "loss_big_cls", "loss_big_patch"}
    total = 1.0 * out["loss_big"] + 0.25 * out["loss_wide"]
    assert float(out["loss"]) == pytest.approx(float(total), rel=1e-6)
    assert float(out["loss_big"]) == pytest.approx(
        float(out["loss_big_cls"] + out["loss_big_patch"]), rel=1e-6
    )


@pytest.mark.parametrize("targets", ["cls", "patch"])
def test_single_target_kind(targets):
    method = MomaMethod([Teacher(vit(), "t")], vit(), MomaConfig(targets=targets))
    out = method.shared_step((imgs(), None))
    assert set(out) == {"loss", "loss_t"} and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert method.student.blocks[0].attn.qkv.weight.grad is not None


def test_grid_mismatch_resamples_or_refuses():
    coarse = vit(patch_size=8)  # 2x2 grid on 16px, the student has 4x4
    both = MomaConfig(mask_ratio=0.5, targets="cls+patch")
    method = MomaMethod([Teacher(coarse, "t")], vit(), both)
    targets = method.teacher_targets(imgs())
    assert targets[0].patches.shape == (4, 16, 32)
    assert torch.isfinite(method.shared_step((imgs(), None))["loss"])
    big_input = vit(img_size=32, patch_size=8)  # same 4x4 grid, but 32px input
    method = MomaMethod([Teacher(big_input, "t")], vit(), both)
    assert torch.isfinite(method.shared_step((imgs(), None))["loss"])
    for teacher in (coarse, big_input):
        with pytest.raises(ConfigError, match="grid_mismatch resample"):
            MomaMethod([Teacher(teacher, "t")], vit(), MomaConfig(grid_mismatch="error"))


def test_resample_patch_tokens():
    x = torch.randn(2, 4, 5)
    assert resample_patch_tokens(x, (2, 2), (2, 2)) is x
    const = torch.ones(2, 4, 5) * torch.arange(5.0)
    out = resample_patch_tokens(const, (2, 2), (3, 3))
    assert out.shape == (2, 9, 5) and torch.allclose(out, torch.ones(2, 9, 5) * torch.arange(5.0))
    # row-major layout: a map that varies along rows only keeps doing so
    rows = torch.tensor([0.0, 0.0, 1.0, 1.0]).view(1, 4, 1)
    out = resample_patch_tokens(rows, (2, 2), (4, 4)).view(4, 4)
    assert torch.allclose(out[:, 0], out[:, 3]) and out[0, 0] < out[3, 0]


def test_invalid_options_are_config_errors():
    t = Teacher(vit(), "t")
    with pytest.raises(ConfigError, match="mask_ratio"):
        MomaMethod([t], vit(), MomaConfig(mask_ratio=0.99))
    with pytest.raises(ConfigError, match="targets"):
        MomaMethod([t], vit(), MomaConfig(targets="all"))
    with pytest.raises(ConfigError, match="at least one teacher"):
        MomaMethod([], vit())
    with pytest.raises(ConfigError, match="unique"):
        MomaMethod([Teacher(vit(), "a"), Teacher(vit(), "a")], vit())
    with pytest.raises(ConfigError, match="weights"):
        MomaMethod([Teacher(vit(), "a", 0.0)], vit())
    student = vit()
    with pytest.raises(ConfigError, match="copy"):
        MomaMethod([Teacher(student, "a")], student)


def test_teacher_names_from_paths():
    cfgs = [
        TeacherConfig("runs/fmnist/mae/backbone.safetensors"),
        TeacherConfig("runs/fmnist/mocov3/backbone.safetensors"),
        TeacherConfig("ckpt/vit-b-300ep.pth.tar"),
        TeacherConfig("x.pth", name="mine"),
    ]
    assert teacher_names(cfgs) == ["mae_backbone", "mocov3_backbone", "vit_b_300ep", "mine"]
    with pytest.raises(ConfigError, match="unique"):
        teacher_names([TeacherConfig("a", name="x"), TeacherConfig("b", name="x")])


def test_loss_module():
    t = torch.randn(3, 5, 8) * 4 + 2
    ln = normalize_target(t, "layernorm")
    assert torch.allclose(ln.mean(-1), torch.zeros(3, 5), atol=1e-5)
    assert torch.allclose(normalize_target(t, "l2").norm(dim=-1), torch.ones(3, 5), atol=1e-5)
    assert torch.equal(normalize_target(t, "none"), t)
    assert float(MomaLoss("cosine", "none")(t * 3, t)) == pytest.approx(0.0, abs=1e-5)
    assert float(MomaLoss("cosine", "none")(-t, t)) == pytest.approx(4.0, abs=1e-5)
    assert float(MomaLoss("mse", "layernorm")(ln, t)) == pytest.approx(0.0, abs=1e-8)
    pred = torch.zeros(3, 5, 8, requires_grad=True)
    MomaLoss("smooth_l1", "l2")(pred, t).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        MomaLoss("l1")
