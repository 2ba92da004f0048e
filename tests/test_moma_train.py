"""MOMA training: mechanisms lower the loss, checkpoints without teachers, resume checks, CLI."""

import copy
import importlib

import pytest
import torch
from toy import TINY, ToyData

from moma.commands.distill import (
    MomaRunConfig,
    StudentConfig,
    TeacherConfig,
    build_moma,
    build_student,
    build_teachers,
)
from moma.errors import CheckpointError
from moma.methods.moma import MomaMethod
from moma.run_folder import read_metrics
from moma.train import TrainerConfig, fit, last_checkpoint

checkpoint = pytest.importorskip("moma.models.checkpoint")

FMNIST_TEACHERS = {
    "runs/fmnist/mae/backbone.safetensors": "mae.pth",
    "runs/fmnist/mocov3/backbone.safetensors": "mocov3.pth",
}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: with 2 intra-op threads on 2 busy shared cores, OpenMP barriers make these
    steps ~20x slower (measured); one thread is as fast when the machine is idle."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def save_teacher(path, seed=0):
    torch.manual_seed(seed)
    torch.save(TINY.build().state_dict(), path)
    return str(path)


def trainer_cfg(out, **kw):
    base = dict(
        out_dir=str(out),
        max_steps=4,
        precision="32-true",
        ckpt_every_n_steps=2,
        progress_bar=False,
        log_every_n_steps=1,
    )
    base.update(kw)
    return TrainerConfig(**base)


def make_method(teachers, **moma_kw):
    student, bb = build_student(StudentConfig(backbone=TINY), img_size=16)
    run = MomaRunConfig(teachers=teachers)
    for k, v in moma_kw.items():
        setattr(run.moma, k, v)
    run.optim.base_lr = 1e-3
    return MomaMethod(build_teachers(teachers), student, run.moma, run.optim, backbone_cfg=bb)


def test_fit_keeps_teachers_frozen_and_out_of_checkpoints(tmp_path):
    pytest.importorskip("moma.models.export")
    teachers = [
        TeacherConfig(save_teacher(tmp_path / "a.pth", 1), name="a"),
        TeacherConfig(save_teacher(tmp_path / "b.pth", 2), weight=0.5, name="b"),
    ]
    method = make_method(teachers)
    before = {k: v.clone() for k, v in method.teachers.state_dict().items()}
    r = fit(method, ToyData(n=32, batch_size=8), trainer_cfg(tmp_path / "run"))
    assert r.global_step == 4

    after = method.teachers.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit-identical
    assert not any(m.training for m in method.teachers.modules())

    ck = torch.load(r.checkpoint, weights_only=True)
    assert not any(k.startswith("teachers.") for k in ck["state_dict"])
    assert any(k.startswith("student.") for k in ck["state_dict"])
    assert any(k.startswith("projectors.1.") for k in ck["state_dict"])
    trainable = list(method.student.parameters()) + list(method.projectors.parameters())
    opt = ck["optimizer_states"][0]
    assert sum(len(g["params"]) for g in opt["param_groups"]) == len(trainable)
    assert len(opt["state"]) == len(trainable)
    recs = ck["moma"]["teachers"]
    assert [r_["name"] for r_ in recs] == ["a", "b"]
    assert recs[0]["sha256"] == checkpoint.sha256_file(teachers[0].path)

    # the logged per-teacher losses sum, with the weights, to the logged total
    total = dict(read_metrics(tmp_path / "run", "train/loss"))
    la = dict(read_metrics(tmp_path / "run", "train/loss_a"))
    lb = dict(read_metrics(tmp_path / "run", "train/loss_b"))
    assert len(total) == 4
    for step, v in total.items():
        assert v == pytest.approx(la[step] + 0.5 * lb[step], rel=1e-5)

    for path in (r.export, r.checkpoint):  # the export and the training checkpoint
        student = checkpoint.load_backbone(path)
        own = method.student.state_dict()
        assert all(torch.equal(v, own[k]) for k, v in student.state_dict().items())


def test_resume_continues_and_refuses_changed_teachers(tmp_path):
    pytest.importorskip("moma.models.export")
    path = save_teacher(tmp_path / "t.pth", 1)
    out = tmp_path / "run"
    fit(
        make_method([TeacherConfig(path, name="t")]),
        ToyData(n=32, batch_size=8),
        trainer_cfg(out, max_steps=2),
    )
    saved = torch.load(last_checkpoint(out), weights_only=True)["state_dict"]

    method = make_method([TeacherConfig(path, name="t")])
    seen = {}
    method.on_train_start = lambda: seen.update(
        {k: v.clone() for k, v in method.student.state_dict().items()}
    )
    r = fit(method, ToyData(n=32, batch_size=8), trainer_cfg(out, max_steps=4))
    assert r.global_step == 4
    assert all(
        torch.equal(seen[k[len("student.") :]], v)
        for k, v in saved.items()
        if k.startswith("student.")
    )

    other = save_teacher(tmp_path / "u.pth", 3)
    with pytest.raises(CheckpointError, match="teacher list differs"):
        fit(
            make_method([TeacherConfig(path, name="t"), TeacherConfig(other, name="u")]),
            ToyData(n=32, batch_size=8),
            trainer_cfg(out, max_steps=6),
        )
    save_teacher(path, 2)  # the teacher file changes under the run
    with pytest.raises(CheckpointError, match=r"teacher 't' .* changed since the run started"):
        fit(
            make_method([TeacherConfig(path, name="t")]),
            ToyData(n=32, batch_size=8),
            trainer_cfg(out, max_steps=6),
        )


@pytest.mark.parametrize("mechanism", ["mocov3_to_mae", "mae_to_mocov3", "both_to_random"])
def test_mechanism_configs_lower_the_loss(tmp_path, mechanism):
    from moma.cli.main import command_parser, to_config

    parser = command_parser(MomaRunConfig, "moma distill", "")
    ns = parser.parse_args(["--config", f"configs/moma/fashion_mnist_{mechanism}.yaml"])
    cfg = to_config(MomaRunConfig, parser, ns)
    files = {
        k: save_teacher(tmp_path / v, seed) for seed, (k, v) in enumerate(FMNIST_TEACHERS.items())
    }
    for t in cfg.teachers:
        t.path = files[t.path]
    if cfg.student.init != "random":
        cfg.student.init = files[cfg.student.init]
    cfg.student.backbone = copy.copy(TINY)
    cfg.data.img_size = 16
    cfg.moma.mask_ratio = 0.75

    method = build_moma(cfg)
    assert (
        len(method.projectors) == len(cfg.teachers) == (2 if mechanism == "both_to_random" else 1)
    )
    if cfg.student.init != "random":  # the student starts from the other method's weights
        init = torch.load(cfg.student.init, weights_only=True)
        assert torch.equal(method.student.pos_embed, init["pos_embed"])
    x = ToyData(n=16, batch_size=16).x

    def fixed_batch_loss():
        torch.manual_seed(123)  # the same masks every time
        with torch.no_grad():
            return method.shared_step((x, None))["loss"].item()

    method.train()
    start = fixed_batch_loss()
    params = [p for m in method.trainable_modules() for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3)
    for _ in range(15):
        loss = method.shared_step((x, None))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert fixed_batch_loss() < 0.9 * start


def _cli_available() -> bool:
    from moma.cli.main import COMMANDS

    try:
        for mod, *_ in COMMANDS.values():
            importlib.import_module(mod)
    except ImportError:
        return False
    return True


def test_cli_overrides_teachers(capsys):
    import yaml

    from moma.cli.main import main

    if not _cli_available():
        pytest.skip("not every moma subcommand exists yet")
    argv = [
        "distill",
        "--config",
        "configs/moma/fashion_mnist_both_to_random.yaml",
        "--teachers.path",
        "other/mae.pth",
        "--moma.mask_ratio",
        "0.75",
        "--print-config",
    ]
    assert main(argv) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert [t["path"] for t in cfg["teachers"]] == [
        "runs/fmnist/mocov3/backbone.safetensors",
        "other/mae.pth",
    ]
    assert cfg["teachers"][1]["name"] == "mae" and cfg["moma"]["mask_ratio"] == 0.75

    def teachers_of(config, teachers):
        argv = ["distill", "--config", config, "--teachers", teachers, "--print-config"]
        assert main(argv) == 0
        return yaml.safe_load(capsys.readouterr().out)["teachers"]

    # a JSON list as long as the file's updates it item by item (left-out fields are kept) ...
    one = '[{"path": "x.pth", "format": "timm", "weight": 2.0}]'
    config = "configs/moma/fashion_mnist_mocov3_to_mae.yaml"
    assert teachers_of(config, one) == [
        {"path": "x.pth", "format": "timm", "weight": 2.0, "name": "mocov3"}
    ]
    # ... one of another length replaces it
    config = "configs/moma/fashion_mnist_both_to_random.yaml"
    assert teachers_of(config, one) == [{"path": "x.pth", "format": "timm", "weight": 2.0}]
    assert main(["distill", "--moma.loss", "l1", "--print-config"]) == 2
