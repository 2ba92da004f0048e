"""Paths a user gives: ``~`` and ``$VARS`` mean the same everywhere; non-files are refused.

Before the fix ``--trainer.out_dir "~/x"`` wrote the checkpoint and the export to a literal
``./~/x`` and the logs to the expanded home folder, and a teacher that is ``/dev/zero`` or a
FIFO hung the run with no output. Now every path option is expanded once
(``moma.paths.user_path``, in ``moma.validation.prepare_run``), and weights, checkpoints and
config files are ``stat``-ed and refused unless they are regular files, before anything opens
them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from faults.runs import deadline, one_line_error, two_classes
from moma.cli.main import main
from moma.train import last_checkpoint


def test_tilde_and_variables_in_every_path_option(tmp_path, monkeypatch, distill, teacher, capsys):
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("MOMA_TEACHERS", str(teacher.parent))
    monkeypatch.setenv("MOMA_DATA", str(two_classes(tmp_path / "images")))
    args = [a for a in distill(Path("~/x"), max_steps=2) if not a.startswith("--teachers")]
    spec = [{"path": f"${{MOMA_TEACHERS}}/{teacher.name}", "name": "t"}]
    assert main([*args, f"--teachers={json.dumps(spec)}"]) == 0

    run = home / "x"  # checkpoint, export, logs and config: all in the expanded folder
    assert last_checkpoint(run).is_file() and (run / "backbone.safetensors").is_file()
    assert list((run / "logs").glob("version_*/metrics.csv"))
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["trainer"]["out_dir"] == str(run)
    assert config["teachers"][0]["path"] == str(teacher)

    assert main(["export", "--checkpoint=~/x", "--out=$HOME/exports/s.safetensors"]) == 0
    assert (home / "exports" / "s.safetensors").is_file()
    rc = main(["eval", "knn", "--backbone=~/x", "--data.dataset=$MOMA_DATA",
               "--data.img_size=16", "--knn.k=[1]", "--knn.precision=32"])  # fmt: skip
    assert rc == 0 and (run / "results" / "knn-k1-x.json").is_file()
    assert main(["report", "--runs=[~/x]", "--out_dir=~/report", "--attention=false"]) == 0
    assert (home / "report" / "report.md").is_file()
    assert sorted(os.listdir(work)) == []  # no literal ~ or $HOME folder
    capsys.readouterr()

    monkeypatch.delenv("MOMA_TEACHERS")
    one_line_error(
        capsys, main([*args, f"--teachers={json.dumps(spec)}"]), "MOMA_TEACHERS is not set"
    )


@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "weights.pth"
    os.mkfifo(path)  # opening it for reading blocks until a writer comes: a hang
    return path


def test_a_fifo_or_a_device_as_a_teacher_is_refused(tmp_path, distill, fifo, capsys):
    for bad, kind in ((fifo, "a FIFO"), (Path("/dev/zero"), "a character device")):
        spec = json.dumps([{"path": str(bad), "name": "t"}])
        with deadline(60):
            rc = main([*distill(tmp_path / "run"), f"--teachers={spec}"])
        one_line_error(capsys, rc, f"{bad}: not a regular file ({kind})")
        assert not (tmp_path / "run").exists()


def test_a_fifo_is_refused_wherever_a_weights_or_config_file_goes(tmp_path, distill, fifo, capsys):
    cases = {
        "student init": [*distill(tmp_path / "run"), f"--student.init={fifo}"],
        "resume": [*distill(tmp_path / "run"), f"--trainer.resume={fifo}"],
        "export": ["export", f"--checkpoint={fifo}", f"--out={tmp_path}/e.safetensors"],
        "config": [*distill(tmp_path / "run"), f"--config={fifo}"],
    }
    for what, argv in cases.items():
        with deadline(60):
            rc = main(argv)
        line = one_line_error(capsys, rc, f"{fifo}: not a regular file (a FIFO)")
        assert line, what
