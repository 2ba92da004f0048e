"""SIGTERM and SIGINT: a checkpoint is saved, the run stops cleanly and says how to resume."""

from __future__ import annotations

import signal
import time

import pytest

from faults.runs import TRACEBACK, attempt_steps, logged_up_to, start_cli, wait_until
from moma.cli.main import main
from moma.train import last_checkpoint
from moma.train.fit import read_run_checkpoint


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_a_checkpoint_and_stops_cleanly_then_resume_finishes(
    tmp_path, distill, rng, sig
):
    max_steps = 100
    out = tmp_path / "run"
    # checkpoints far apart: the only checkpoint is the one the signal asks for
    args = distill(out, max_steps=max_steps, ckpt_every=1000)
    signal_after = rng.randrange(1, 30)  # a random step, then a random moment in it
    child = start_cli(args, tmp_path / "stopped.log")
    try:
        child.wait_for(r"training from step 0")
        wait_until(lambda: logged_up_to(out) >= signal_after, 240, f"step {signal_after}", child)
        time.sleep(rng.uniform(0.0, 0.03))
        child.signal(sig)
        rc = child.wait()
    finally:
        child.stop()
    text = child.text()
    name = signal.Signals(sig).name
    assert rc == 128 + sig, text[-3000:]  # the shell's "stopped by a signal" code
    assert TRACEBACK not in text
    assert f"received {name}: saving a checkpoint" in text
    last = text.strip().splitlines()[-1]
    assert last.startswith(f"moma: stopped by {name} at step ")
    assert "re-run the same command to resume" in last and str(last_checkpoint(out)) in last

    step = read_run_checkpoint(last_checkpoint(out), "moma")["global_step"]
    assert 1 <= step < max_steps
    assert f"at step {step};" in last
    assert not (out / ".moma.lock").exists()  # released on the way out
    assert not (out / "backbone.safetensors").exists()  # no export of an unfinished run

    assert main(args) == 0  # the same command resumes and finishes
    assert read_run_checkpoint(last_checkpoint(out))["global_step"] == max_steps
    assert attempt_steps(out)[-1][0] == step
    assert (out / "backbone.safetensors").exists()
