"""A resumed run is the run that was started, and a run folder records what trained it.

Before the fix, resuming ``moma distill`` with another mask ratio, batch size, teacher weight
or lr said "resuming from step N" and went on, overwriting ``config.yaml``; a
``--trainer.resume never`` run that failed at once left the previous run's checkpoint beside
its own ``config.yaml``; and ``--student.init`` silently replaced ``--student.backbone`` while
``config.yaml`` recorded the values that were not used.
"""

from __future__ import annotations

import json
import logging

import torch
import yaml

from faults.runs import one_line_error
from moma.cli.main import main
from moma.train import last_checkpoint


def step_of(path) -> int:
    return int(torch.load(path, weights_only=True)["global_step"])


def test_resume_with_changed_options_is_refused(run_copy, teacher, capsys):
    out, args = run_copy
    config, ckpt = (out / "config.yaml").read_bytes(), last_checkpoint(out).read_bytes()
    changed = ["--moma.mask_ratio=0.5", "--data.batch_size=8", "--optim.base_lr=2e-3"]
    rc = main([*args, *changed, "--trainer.max_steps=6"])
    one_line_error(
        capsys,
        rc,
        f"{last_checkpoint(out)} was trained with other options: ",
        "data.batch_size 16 -> 8",
        "moma.mask_ratio 0.75 -> 0.5",
        "optim.base_lr 0.001 -> 0.002",
        "--trainer.allow_config_change true",
    )
    spec = json.dumps([{"path": str(teacher), "name": "t", "weight": 2.0}])
    rc = main([*args, f"--teachers={spec}", "--trainer.max_steps=6"])
    one_line_error(capsys, rc, "teachers[0].weight 1.0 -> 2.0")
    # nothing was touched
    assert (out / "config.yaml").read_bytes() == config
    assert last_checkpoint(out).read_bytes() == ckpt
    assert not (out / "config_history").exists()


def test_options_that_only_extend_or_report_may_change(run_copy):
    out, args = run_copy
    extra = [
        "--trainer.max_steps=6",
        "--trainer.ckpt_every_n_steps=3",
        "--trainer.log_every_n_steps=2",
    ]
    assert main([*args, *extra]) == 0
    assert step_of(last_checkpoint(out)) == 6


def test_an_allowed_change_is_recorded(run_copy, caplog):
    out, args = run_copy
    before = yaml.safe_load((out / "config.yaml").read_text())
    caplog.set_level(logging.WARNING, logger="moma.train.resume_config")
    more = ["--moma.mask_ratio=0.5", "--trainer.max_steps=6", "--trainer.allow_config_change=true"]
    assert main([*args, *more]) == 0
    assert step_of(last_checkpoint(out)) == 6
    assert "moma.mask_ratio 0.75 -> 0.5" in caplog.text
    kept = out / "config_history" / "config_until_step_4.yaml"
    assert yaml.safe_load(kept.read_text()) == before  # what trained steps 1-4
    assert "#   moma.mask_ratio 0.75 -> 0.5" in kept.read_text()
    now = yaml.safe_load((out / "config.yaml").read_text())
    assert now["moma"]["mask_ratio"] == 0.5
    ckpt = torch.load(last_checkpoint(out), weights_only=True)
    assert ckpt["moma"]["config"]["moma"]["mask_ratio"] == 0.5


def test_starting_over_moves_the_previous_run_aside(run_copy, capsys):
    out, args = run_copy
    old_config = (out / "config.yaml").read_text()
    # A new run in the same folder that fails at once (its loss overflows before its first
    # checkpoint): its config.yaml must not sit beside the previous run's checkpoint.
    bad = ["--trainer.resume=never", "--optim.base_lr=1e30", "--trainer.max_steps=20",
           "--trainer.ckpt_every_n_steps=100"]  # fmt: skip
    one_line_error(capsys, main([*args, *bad]), "loss became")
    now = yaml.safe_load((out / "config.yaml").read_text())
    assert now["optim"]["base_lr"] == 1e30
    assert not last_checkpoint(out).exists()  # nothing of this folder's runs would resume
    (moved,) = (out / "replaced").iterdir()
    assert (moved / "config.yaml").read_text() == old_config
    assert step_of(moved / "checkpoints" / "last.ckpt") == 4
    assert (moved / "backbone.safetensors").is_file()
    # the original command now trains a new run from step 0 (nothing to resume)
    assert main(args) == 0 and step_of(last_checkpoint(out)) == 4


def test_student_init_records_the_architecture_it_used(tmp_path, distill, teacher, caplog):
    out = tmp_path / "run"
    caplog.set_level(logging.WARNING, logger="moma.methods.moma")
    extra = [f"--student.init={teacher}", "--student.backbone.depth=3"]  # the file has 2 blocks
    assert main(distill(out, max_steps=2, extra=extra)) == 0
    assert "ignored: student.backbone.depth=3 (the file's: 2)" in caplog.text
    recorded = yaml.safe_load((out / "config.yaml").read_text())["student"]["backbone"]
    assert recorded["depth"] == 2 and recorded["embed_dim"] == 32 and recorded["img_size"] == 16


def test_what_the_allow_list_matches(monkeypatch):
    import moma.train.resume_config as rc

    old = {"teachers": [{"path": "a", "weight": 1.0}], "trainer": {"max_steps": 4}, "x": [1, 2]}
    new = {"teachers": [{"path": "b", "weight": 1}], "trainer": {"max_steps": 8}, "x": [1, 3]}
    changes = {c.key: (c.old, c.new) for c in rc.config_changes(old, new)}
    assert changes == {
        "teachers[0].path": ("a", "b"),
        "trainer.max_steps": (4, 8),
        "x": ([1, 2], [1, 3]),
    }
    assert [k for k in changes if rc.may_change(k)] == ["teachers[0].path", "trainer.max_steps"]
    # an option the old config does not record (added by a later moma) is not a change
    assert rc.config_changes({"a": 1}, {"a": 1, "cache": {"dir": "c"}}) == []
    monkeypatch.setattr(rc, "RESUME_MAY_CHANGE", rc.RESUME_MAY_CHANGE | {"cache.*"})
    assert rc.may_change("cache.dir") and not rc.may_change("cached")
