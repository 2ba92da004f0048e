"""The training engine: resume continues the step count and the lr schedule; guards."""

import json
import socket

import pytest
import torch
from toy import ToyData, ToyMethod

from moma.errors import TrainingError
from moma.run_folder import RunLock, read_metrics
from moma.train import TrainerConfig, fit, last_checkpoint

pytest.importorskip("moma.models.export")


def _cfg(out, **kw):
    base = dict(
        out_dir=str(out),
        max_steps=12,
        precision="32-true",
        ckpt_every_n_steps=4,
        progress_bar=False,
        log_every_n_steps=1,
    )
    base.update(kw)
    return TrainerConfig(**base)


class Killed(Exception):
    pass


class StopAt(ToyMethod):
    """Simulates a crash at step ``at`` (the real SIGKILL test lives in tests/faults)."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def on_train_batch_start(self, batch, batch_idx):
        if self.global_step == self.at:
            raise Killed


def test_full_run_writes_checkpoint_metrics_and_export(tmp_path):
    r = fit(ToyMethod(), ToyData(), _cfg(tmp_path), {"x": 1})
    assert r.global_step == 12 and not r.interrupted
    ck = torch.load(r.checkpoint, weights_only=True)
    assert ck["global_step"] == 12 and ck["moma"]["method"] == "toy"
    assert ck["moma"]["config"] == {"x": 1}
    assert r.export is not None and r.export.exists()
    assert (tmp_path / "config.yaml").exists()
    assert len(read_metrics(tmp_path)) >= 10
    assert not (tmp_path / ".moma.lock").exists()


def test_resume_continues_steps_and_lr_schedule(tmp_path):
    ref_dir, cut_dir = tmp_path / "ref", tmp_path / "cut"
    fit(ToyMethod(), ToyData(), _cfg(ref_dir))
    ref_lr = dict(read_metrics(ref_dir, "train/lr"))

    with pytest.raises(Killed):
        fit(StopAt(6), ToyData(), _cfg(cut_dir))
    ck = torch.load(last_checkpoint(cut_dir), weights_only=True)
    assert ck["global_step"] == 4  # last periodic checkpoint before the kill

    r = fit(ToyMethod(), ToyData(), _cfg(cut_dir))
    assert r.global_step == 12
    lr = dict(read_metrics(cut_dir, "train/lr"))
    # after resuming from step 4 the schedule continues: same lr as the uninterrupted run
    for step in range(5, 12):
        assert lr[step] == pytest.approx(ref_lr[step], rel=1e-6), step


def test_nan_loss_stops_with_step_and_keeps_last_checkpoint(tmp_path):
    with pytest.raises(TrainingError, match=r"at step \d+ \(last good checkpoint"):
        fit(ToyMethod(nan_at=6), ToyData(), _cfg(tmp_path))
    ck = torch.load(last_checkpoint(tmp_path), weights_only=True)
    assert ck["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in ck["state_dict"].values())


def test_lock_refuses_a_second_live_run(tmp_path):
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / ".moma.lock").write_text(
            json.dumps({"pid": p.pid, "host": socket.gethostname()})
        )
        with pytest.raises(TrainingError, match="in use by process"):
            RunLock(tmp_path).acquire()
    finally:
        p.kill()
        p.wait()
    # holder dead: the stale lock is taken over
    lock = RunLock(tmp_path).acquire()
    lock.release()
    assert not (tmp_path / ".moma.lock").exists()
