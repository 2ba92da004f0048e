"""``moma.distill`` / ``pretrain`` / ``embed``: the CLI's parser and configs, from Python."""

from __future__ import annotations

import subprocess
import sys

import pytest

import moma
from moma.cli.main import command_parser, to_config
from moma.commands.distill import MomaRunConfig, TeacherConfig
from moma.errors import ConfigError

CONFIG = "configs/moma/fashion_mnist_both_to_random.yaml"


@pytest.fixture
def captured(monkeypatch):
    """Replace each command's run function by one that records the config it gets."""
    import moma.commands.distill as moma_mod
    import moma.commands.embed as embed_mod
    import moma.commands.pretrain as mae_mod

    got: list = []
    for mod, fn in ((moma_mod, "run_moma"), (mae_mod, "run_mae"), (embed_mod, "run_embed")):
        monkeypatch.setattr(mod, fn, lambda cfg: got.append(cfg) or "ran")
    return got


def cli_config(argv: list[str]) -> MomaRunConfig:
    parser = command_parser(MomaRunConfig, "moma distill", "")
    return to_config(MomaRunConfig, parser, parser.parse_args(argv))


def test_distill_resolves_like_the_cli(captured):
    result = moma.distill(
        out="runs/x",
        data="/data/imgs",
        teachers=["a.pth", {"path": "b.pth", "name": "b", "weight": 0.5}],
        student="init.pth",
        config=CONFIG,
        trainer={"max_steps": 7},
        **{"moma.mask_ratio": 0.75, "optim.base_lr": "1e-3"},
    )
    assert result == "ran"
    (cfg,) = captured
    cli = cli_config(
        [
            "--config",
            CONFIG,
            "--trainer.out_dir",
            "runs/x",
            "--data.dataset",
            "/data/imgs",
            "--teachers",
            '[{"path": "a.pth"}, {"path": "b.pth", "name": "b", "weight": 0.5}]',
            "--student.init",
            "init.pth",
            "--trainer.max_steps",
            "7",
            "--moma.mask_ratio",
            "0.75",
            "--optim.base_lr",
            "1e-3",
        ]  # fmt: skip
    )
    # a list replaces the config file's (the CLI updates a list of the same length item by
    # item, so its first teacher keeps the file's name); every other option resolves the same
    assert cfg.teachers == [TeacherConfig("a.pth"), TeacherConfig("b.pth", weight=0.5, name="b")]
    assert cli.teachers[0].name == "mocov3"
    cli.teachers = cfg.teachers
    assert cfg == cli and cfg.optim.base_lr == 1e-3 and cfg.trainer.max_epochs == 5
    # the config file's other values are kept (the student's compact backbone)
    assert cfg.student.backbone == cli_config(["--config", CONFIG]).student.backbone


def test_dataclasses_and_single_paths_are_accepted(captured):
    from moma.data import DataConfig
    from moma.models.vit import BackboneConfig

    moma.pretrain("mae", out="runs/m", data=DataConfig(subset=64), backbone=BackboneConfig(depth=2))
    moma.embed("runs/s", "fashion_mnist", "e.npy", features="mean", **{"data.subset": 8})
    mae_cfg, emb_cfg = captured
    assert mae_cfg.data.subset == 64 and mae_cfg.backbone.depth == 2
    assert mae_cfg.trainer.out_dir == "runs/m"
    assert (emb_cfg.backbone, emb_cfg.out, emb_cfg.features) == ("runs/s", "e.npy", "mean")
    assert emb_cfg.data.subset == 8 and emb_cfg.data.dataset == "fashion_mnist"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"moma.mask_ratio": "abc"}, "moma.mask_ratio"),
        ({"moma.maskratio": 0.1}, "maskratio"),
        ({"trainer": {"max_stepz": 1}}, "max_stepz"),
    ],
)
def test_bad_options_raise_config_errors(captured, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        moma.distill(out="runs/x", teachers=["a.pth"], **kwargs)
    assert not captured
    with pytest.raises(ConfigError, match="mae' or 'mocov3"):
        moma.pretrain("dino")


def test_import_moma_stays_cheap():
    code = "import sys, moma; moma.distill; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
