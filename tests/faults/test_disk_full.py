"""Disk full while a checkpoint is written: a clear error, the previous checkpoint intact."""

from __future__ import annotations

import errno
import os
import subprocess
import uuid

import pytest
import torch
from toy import ToyData, ToyMethod

from faults.runs import TRACEBACK, error_lines
from moma.cli.main import main
from moma.errors import CheckpointError
from moma.run_folder.atomic import stale_temp_files
from moma.train import TrainerConfig, fit, last_checkpoint
from moma.train.fit import read_run_checkpoint


def test_fake_enospc_during_a_checkpoint_write(tmp_path, distill, capsys, monkeypatch):
    """The second checkpoint write gets ENOSPC after writing part of its bytes."""
    real_save = torch.save
    calls = []

    def full_disk(obj, f, *args, **kwargs):
        calls.append(obj.get("global_step"))
        if len(calls) < 2:
            return real_save(obj, f, *args, **kwargs)
        f.write(b"\0" * 4096)  # part of the file made it before the disk filled up
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    out = tmp_path / "run"
    args = distill(out, max_steps=8, ckpt_every=2)
    monkeypatch.setattr(torch, "save", full_disk)
    rc = main(args)
    monkeypatch.setattr(torch, "save", real_save)
    err = capsys.readouterr().err
    assert rc == 2 and TRACEBACK not in err
    ckpt = last_checkpoint(out)
    assert error_lines(err) == [
        f"moma: error: could not write {ckpt}: disk full; the previous file is intact"
    ]
    assert calls == [2, 4]
    assert read_run_checkpoint(ckpt, "moma")["global_step"] == 2  # intact
    assert not stale_temp_files(ckpt.parent)  # the partial temp file was removed
    assert not (out / ".moma.lock").exists()

    assert main(args) == 0  # space is back: the same command resumes and finishes
    assert read_run_checkpoint(ckpt)["global_step"] == 8


def _toy_cfg(out, max_steps: int) -> TrainerConfig:
    return TrainerConfig(
        out_dir=str(out),
        max_steps=max_steps,
        ckpt_every_n_steps=2,
        precision="32-true",
        accelerator="cpu",
        progress_bar=False,
        log_every_n_steps=1,
    )


@pytest.fixture
def small_fs(tmp_path):
    """Mount a tmpfs of a given size (needs root and mount rights; skipped elsewhere)."""
    mounted = []

    def mount(size_bytes: int):
        where = tmp_path / f"fs-{uuid.uuid4().hex[:6]}"
        where.mkdir()
        size_k = max(64, size_bytes // 1024 + 1)
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_k}k", "tmpfs", str(where)],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip() or r.returncode}")
        mounted.append(where)
        return where

    try:
        yield mount
    finally:
        for where in mounted:
            subprocess.run(["umount", str(where)], capture_output=True)


@pytest.mark.parametrize("room", [1.25, 1.75])
def test_real_full_filesystem_keeps_the_previous_checkpoint(tmp_path, small_fs, room):
    """A tmpfs with room for one checkpoint but not for its replacement next to it.

    The disk fills at different points of the second write (``room`` x a checkpoint): torch
    then raises either the write's OSError or its own RuntimeError; both must read the same.
    """
    probe = fit(ToyMethod(), ToyData(), _toy_cfg(tmp_path / "probe", 2))
    size = probe.checkpoint.stat().st_size
    fs = small_fs(int(size * room))

    out = fs / "run"
    with pytest.raises(CheckpointError) as info:
        fit(ToyMethod(), ToyData(), _toy_cfg(out, 8))
    ckpt = last_checkpoint(out)
    assert str(info.value) == f"could not write {ckpt}: disk full; the previous file is intact"
    assert read_run_checkpoint(ckpt, "toy")["global_step"] == 2
    assert not stale_temp_files(ckpt.parent)
    assert not (out / ".moma.lock").exists()


def test_fake_enospc_during_an_export_keeps_the_previous_one(tmp_path, monkeypatch, tiny_vit):
    """An export goes through the same writer as a checkpoint: on a full disk the same one-line
    error, the previous export (weights and sidecar) intact, no temp file left."""
    from moma.models.export import export_backbone

    path = export_backbone(tiny_vit(), tmp_path / "backbone.safetensors")
    sidecar = path.with_suffix(".json")
    before = path.read_bytes(), sidecar.read_bytes()
    real_fdopen = os.fdopen

    class FullDisk:
        """A file whose write stores part of its bytes, then hits ENOSPC."""

        def __init__(self, f) -> None:
            self.f = f

        def write(self, data) -> int:
            self.f.write(bytes(data)[:100])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.f.close()

    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: FullDisk(real_fdopen(fd, *a, **k)))
    with pytest.raises(CheckpointError) as info:
        export_backbone(tiny_vit(depth=1), path)
    monkeypatch.setattr(os, "fdopen", real_fdopen)
    assert str(info.value) == f"could not write {path}: disk full; the previous file is intact"
    assert (path.read_bytes(), sidecar.read_bytes()) == before
    assert not stale_temp_files(tmp_path)
