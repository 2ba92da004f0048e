"""Invalid option values: one line naming the option, exit 2, no traceback, nothing written.

Each value here used to end in a traceback (a ZeroDivisionError, timm's or Lightning's own
exception) or to run on silently (a NaN teacher weight, ``max_steps 0``); now the validation
layer (``moma.validation``), which every run goes through before it builds or writes
anything, names the option.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from faults.runs import one_line_error
from moma.cli.main import main

BAD_DISTILL_OPTIONS = {
    "betas": (["--optim.betas=[2,0.5]"], ["optim.betas must be two values in [0, 1)"]),
    "img_size-0": (["--data.img_size=0"], ["data.img_size must be", "got 0"]),
    "patch_size-0": (["--student.backbone.patch_size=0"], ["student.backbone.patch_size", "0"]),
    "accumulate-0": (["--trainer.accumulate_grad_batches=0"], ["trainer.accumulate_grad_batches"]),
    "drop_path-2": (["--student.backbone.drop_path_rate=2"], ["drop_path_rate must be in [0, 1)"]),
    "max_steps-negative": (["--trainer.max_steps=-5"], ["trainer.max_steps must be", "-5"]),
    "max_steps-0": (["--trainer.max_steps=0"], ["trainer.max_steps must be", "got 0"]),
    "devices-0": (["--trainer.devices=0"], ["trainer.devices must be", "got 0"]),
    "img_size-not-a-multiple": (["--data.img_size=18"], ["multiple of student.backbone.patch"]),
    "precision": (["--trainer.precision=17"], ["trainer.precision must be one of"]),
    "seed": (["--trainer.seed=-1"], ["trainer.seed must be in [0, 4294967295]"]),
    "not-a-vit": (["--student.backbone.arch=nope"], ["student.backbone.arch 'nope'"]),
}


@pytest.mark.parametrize("extra, parts", BAD_DISTILL_OPTIONS.values(), ids=BAD_DISTILL_OPTIONS)
def test_invalid_distill_option_is_one_line_and_writes_nothing(
    tmp_path, distill, capsys, extra, parts
):
    out = tmp_path / "run"
    one_line_error(capsys, main([*distill(out), *extra]), *parts)
    assert not out.exists()


YAML_VALUES = {
    "nan-lr": ("optim:\n  base_lr: .nan\n", "optim.base_lr must be a finite number"),
    "nan-teacher-weight": ("teachers:\n  - {{path: '{t}', weight: .nan}}\n", "teachers[0].weight"),
    "inf-teacher-weight": ("teachers:\n  - {{path: '{t}', weight: .inf}}\n", "teachers[0].weight"),
    "zero-weights": ("teachers:\n  - {{path: '{t}', weight: 0}}\n", "weights sum to 0"),
    "empty-file": ("", "the config file is empty"),
    "a-list": ("- 1\n- 2\n", "holds a list, not a mapping"),
}


@pytest.mark.parametrize("text, part", YAML_VALUES.values(), ids=YAML_VALUES)
def test_invalid_values_from_a_config_file(tmp_path, distill, teacher, capsys, text, part):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text.format(t=teacher))
    out = tmp_path / "run"
    one_line_error(capsys, main([*distill(out), f"--config={cfg}"]), part)
    assert not out.exists()


def test_output_folder_that_is_a_file(tmp_path, distill, capsys):
    taken = tmp_path / "taken"
    taken.write_text("a user's file")
    one_line_error(
        capsys, main([*distill(tmp_path / "run"), f"--trainer.out_dir={taken}"]), str(taken)
    )
    one_line_error(
        capsys,
        main([*distill(tmp_path / "run"), f"--trainer.out_dir={taken}/run"]),
        f"{taken} is not a folder",
    )
    assert taken.read_text() == "a user's file"


def test_cache_dir_below_a_file_is_refused_even_when_the_cache_is_off(tmp_path, distill, capsys):
    # Found by the CLI sweep: a 2-step run turns the cache off (cache.views auto), so a
    # cache.dir that can never be a folder used to pass unnoticed.
    taken = tmp_path / "taken"
    taken.write_text("a user's file")
    out = tmp_path / "run"
    argv = [*distill(out), f"--cache.dir={taken}/below"]
    one_line_error(capsys, main(argv), "cache.dir", f"{taken} is not a folder")
    assert not out.exists() and taken.read_text() == "a user's file"


def test_backbone_of_another_image_size(finished_run, tmp_path, capsys):
    """The run's student takes 16 px images; 32 px data used to fail inside timm."""
    run, _ = finished_run
    argv = ["eval", "knn", f"--backbone={run}", "--data.subset=64", "--data.img_size=32",
            f"--out_dir={tmp_path / 'eval'}"]  # fmt: skip
    one_line_error(capsys, main(argv), "takes 16x16 px images, the data gives 32x32")
    assert not (tmp_path / "eval").exists()


def test_export_out_that_is_a_folder(finished_run, tmp_path, capsys):
    run, _ = finished_run
    for folder, message in (
        (tmp_path / "exports", "out must end in .safetensors"),
        (tmp_path / "b.safetensors", "is a folder; give a file path"),
    ):
        folder.mkdir()
        rc = main(["export", f"--checkpoint={run}", f"--out={folder}"])
        one_line_error(capsys, rc, str(folder), message)
        assert list(folder.iterdir()) == []


# Tiny data and models: before the fix some of these ran a whole evaluation first.
DATA = ["--data.subset=64", "--data.img_size=16"]
EVAL = [*DATA, "--random_init.img_size=16", "--random_init.depth=1",
        "--random_init.embed_dim=32", "--random_init.num_heads=2"]  # fmt: skip
PRETRAIN = [*DATA, "--backbone.depth=1", "--backbone.embed_dim=32", "--backbone.num_heads=2",
            "--trainer.max_steps=2", "--trainer.accelerator=cpu"]  # fmt: skip
OTHER_COMMANDS = {
    "mae-img-size": (
        ["pretrain", "mae", *PRETRAIN, "--backbone.img_size=32"],
        "backbone.img_size (32) must equal data.img_size (16)",
    ),
    "mocov3-temperature": (
        ["pretrain", "mocov3", *PRETRAIN, "--backbone.img_size=16", "--mocov3.temperature=0"],
        "mocov3.temperature must be > 0",
    ),
    "knn-k-0": (["eval", "knn", *EVAL, "--knn.k=[0]"], "knn.k must be a non-empty list"),
    "linear-epochs-0": (
        ["eval", "linear", *EVAL, "--linear.epochs=0"],
        "linear.epochs must be >= 1",
    ),
    "finetune-odd-batch": (["eval", "finetune", *EVAL, "--finetune.batch_size=3"], "must be even"),
    "eval-role": (["eval", "knn", *EVAL, "--role=boss"], "role must be"),
    "eval-random-init-size": (
        ["eval", "knn", *EVAL, "--random_init.img_size=32"],
        "random_init.img_size (32) must equal data.img_size (16)",
    ),
    "report-no-runs": (["report", "--runs=[]"], "runs must be a non-empty list"),
    "quickstart-precision": (
        ["quickstart", "--budget=smoke", "--precision=half"],
        "precision must be one of",
    ),
    "unset-variable": (
        ["eval", "knn", *EVAL, "--out_dir=$MOMA_UNSET_VAR/x"],
        "MOMA_UNSET_VAR is not",
    ),
}


@pytest.mark.parametrize("argv, part", OTHER_COMMANDS.values(), ids=OTHER_COMMANDS)
def test_every_command_goes_through_the_validation(tmp_path, monkeypatch, capsys, argv, part):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MOMA_UNSET_VAR", raising=False)
    one_line_error(capsys, main(argv), part)
    assert list(Path(tmp_path).iterdir()) == []  # nothing written
