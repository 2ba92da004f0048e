"""Bad inputs a user can give: each is one line, ``moma: error: ...``, exit 2, no traceback.

Damaged checkpoints (truncated, bit flips), a checkpoint of another method or architecture, a
teacher file changed since the run started, a patch-grid mismatch with
``grid_mismatch=error``, an out-of-range mask ratio, unknown options in a config file or on
the command line. The command runs in-process (``moma.cli.main.main``, what the console
script calls); one case also runs as a real process to check the exit status and stderr.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from faults.conftest import save_teacher
from faults.runs import TRACEBACK, distill_args, one_line_error, start_cli
from moma.cli.main import main
from moma.errors import CheckpointError
from moma.models.checkpoint import load_backbone
from moma.train import last_checkpoint


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_bytes(path: Path, where: float = 0.5, n: int = 16) -> None:
    """Invert ``n`` bytes in the middle of the file (tensor data: torch.load alone misses it)."""
    data = bytearray(path.read_bytes())
    i = int(len(data) * where)
    data[i : i + n] = bytes(b ^ 0xFF for b in data[i : i + n])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, what",
    [(truncate, "truncated or corrupt"), (flip_bytes, "corrupt checkpoint")],
    ids=["truncated", "bit-flips"],
)
def test_damaged_checkpoint_on_resume_and_load(run_copy, capsys, damage, what):
    out, args = run_copy
    ckpt = last_checkpoint(out)
    damage(ckpt)
    # resume: the run folder's last.ckpt
    one_line_error(capsys, main([*args, "--trainer.max_steps=6"]), str(ckpt), what)
    # the Python API and `moma export`
    with pytest.raises(CheckpointError, match="corrupt") as info:
        load_backbone(ckpt)
    assert str(ckpt) in str(info.value) and "\n" not in str(info.value)
    one_line_error(capsys, main(["export", f"--checkpoint={ckpt}", f"--out={out}/x.safetensors"]))


@pytest.mark.parametrize(
    "damage, what",
    [(truncate, "truncated or corrupt"), (flip_bytes, "corrupt export: its sha256 differs")],
    ids=["truncated", "bit-flips"],
)
def test_damaged_export_is_refused(run_copy, capsys, damage, what):
    out, _ = run_copy
    export = out / "backbone.safetensors"
    damage(export)
    with pytest.raises(CheckpointError, match=what) as info:
        load_backbone(export)
    assert str(info.value).startswith(f"{export}: ")
    one_line_error(capsys, main(["export", f"--checkpoint={export}", f"--out={out}/x.safetensors"]))


def test_damaged_checkpoint_as_a_real_process(run_copy, tmp_path):
    """The console script's exit status and stderr, not only ``main``'s return value."""
    out, args = run_copy
    truncate(last_checkpoint(out))
    child = start_cli([*args, "--trainer.max_steps=6"], tmp_path / "cli.log")
    assert child.wait() == 2
    text = child.text()
    assert TRACEBACK not in text
    assert text.strip().splitlines()[-1].startswith(f"moma: error: {last_checkpoint(out)}: ")


@pytest.fixture(scope="module")
def mae_checkpoint(tmp_path_factory, data_args) -> Path:
    """A tiny MAE run's checkpoint (``moma pretrain mae``, 2 steps)."""
    out = tmp_path_factory.mktemp("mae") / "run"
    args = [
        "pretrain",
        "mae",
        "--backbone.img_size=16",
        "--backbone.patch_size=4",
        "--backbone.depth=2",
        "--backbone.embed_dim=32",
        "--backbone.num_heads=2",
        "--mae.decoder_embed_dim=32",
        "--mae.decoder_depth=1",
        "--mae.decoder_num_heads=2",
        *data_args,
        "--data.img_size=16",
        "--data.batch_size=16",
        f"--trainer.out_dir={out}",
        "--trainer.max_steps=2",
        "--trainer.precision=32-true",
        "--trainer.accelerator=cpu",
        "--trainer.progress_bar=false",
    ]
    assert main(args) == 0
    return last_checkpoint(out)


def test_checkpoint_of_another_method_is_refused(tmp_path, distill, mae_checkpoint, capsys):
    rc = main(distill(tmp_path / "run", extra=[f"--trainer.resume={mae_checkpoint}"]))
    one_line_error(capsys, rc, f"{mae_checkpoint} is a checkpoint of method 'mae', not 'moma'")


def test_checkpoint_of_another_architecture_is_refused(run_copy, capsys):
    out, args = run_copy
    rc = main([*args, "--student.backbone.embed_dim=48", "--trainer.max_steps=6"])
    # the recorded config tells first ...
    one_line_error(capsys, rc, "student.backbone.embed_dim 32 -> 48", "--trainer.resume never")
    # ... and, told to go on with the new options, the weights do not fit
    more = ["--trainer.allow_config_change=true"]
    rc = main([*args, "--student.backbone.embed_dim=48", "--trainer.max_steps=6", *more])
    one_line_error(
        capsys,
        rc,
        f"{last_checkpoint(out)} does not match this model: size mismatch for student.",
        "--trainer.resume never",
    )


def test_teacher_changed_since_the_run_started_is_refused(run_copy, teacher, tmp_path, capsys):
    out, args = run_copy
    mine = tmp_path / "mine.safetensors"  # the run's teacher, moved (same bytes: accepted)
    shutil.copy(teacher, mine)
    shutil.copy(teacher.with_suffix(".json"), mine.with_suffix(".json"))
    args = [a.replace(str(teacher), str(mine)) for a in args]
    assert main([*args, "--trainer.max_steps=5"]) == 0
    save_teacher(mine, seed=7)  # now the file changes under the run
    rc = main([*args, "--trainer.max_steps=6"])
    one_line_error(capsys, rc, f"teacher 't' ({mine}) changed since the run started: sha256 ")


def test_patch_grid_mismatch_with_grid_mismatch_error(tmp_path, data_args, capsys):
    coarse = save_teacher(tmp_path / "patch8.safetensors", patch_size=8)  # 2x2 grid, student 4x4
    args = distill_args(tmp_path / "run", coarse, data_args, extra=["--moma.grid_mismatch=error"])
    one_line_error(
        capsys,
        main(args),
        "teacher 't' has a 2x2 patch grid on 16px images, the student a 4x4 grid",
        "--moma.grid_mismatch resample",
    )
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.parametrize("ratio", ["0.99", "-0.1", "1.5"])
def test_mask_ratio_out_of_range(tmp_path, distill, capsys, ratio):
    rc = main(distill(tmp_path / "run", extra=[f"--moma.mask_ratio={ratio}"]))
    one_line_error(capsys, rc, f"moma.mask_ratio: mask_ratio must be in [0, 0.98], got {ratio}")


def test_unknown_option_in_a_config_file(tmp_path, distill, capsys):
    cfg = tmp_path / "my run.yaml"
    cfg.write_text("moma:\n  mask_ratoi: 0.5\n")
    rc = main([*distill(tmp_path / "run"), f"--config={cfg}"])
    one_line_error(capsys, rc, f"moma: error: {cfg}: unknown option 'moma.mask_ratoi'")


def test_unknown_option_and_bad_value_on_the_command_line(tmp_path, distill, capsys):
    rc = main([*distill(tmp_path / "run"), "--moma.mask_ratoi=0.5"])
    one_line_error(capsys, rc, "unrecognized arguments: --moma.mask_ratoi")
    rc = main([*distill(tmp_path / "run"), "--trainer.max_steps=many"])
    one_line_error(capsys, rc, "trainer.max_steps", "many")
