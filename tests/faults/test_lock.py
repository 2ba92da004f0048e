"""Two runs on one output folder: the second is refused while the first lives, then takes over."""

from __future__ import annotations

import logging
import signal

from toy import ToyData, ToyMethod

from faults.runs import TRACEBACK, error_lines, start_toy, wait_until
from moma.cli.main import main
from moma.train import TrainerConfig, fit, last_checkpoint
from moma.train.fit import read_run_checkpoint


def test_second_run_is_refused_while_the_first_lives_then_takes_the_stale_lock_over(
    tmp_path, distill, capsys, caplog
):
    out = tmp_path / "run"
    first = start_toy(
        {"out_dir": str(out), "max_steps": 100_000, "ckpt_every": 2, "sleep": 0.02},
        tmp_path / "first.log",
    )
    try:
        first.wait_for(r"training from step 0")
        wait_until(last_checkpoint(out).exists, 120, "the first run's checkpoint", first)

        rc = main(distill(out))  # `moma distill` into the same folder
        err = capsys.readouterr().err
        assert rc == 2 and TRACEBACK not in err
        assert error_lines(err) == [
            f"moma: error: output folder {out} is in use by process {first.pid}; wait for it "
            "to finish or choose another --trainer.out_dir"
        ]
        assert not (out / "config.yaml").exists()  # the refused run wrote nothing
        assert first.proc.poll() is None  # and the first run goes on

        first.signal(signal.SIGKILL)  # the first run dies without releasing its lock
        first.wait()
    finally:
        first.stop()
    assert (out / ".moma.lock").exists()

    saved = read_run_checkpoint(last_checkpoint(out), "toy")["global_step"]
    cfg = TrainerConfig(
        out_dir=str(out),
        max_steps=saved + 4,
        ckpt_every_n_steps=2,
        precision="32-true",
        accelerator="cpu",
        progress_bar=False,
        log_every_n_steps=1,
    )
    with caplog.at_level(logging.WARNING, logger="moma.run_folder.lock"):
        result = fit(ToyMethod(), ToyData(), cfg)
    assert f"taking over the stale lock {out / '.moma.lock'} (process {first.pid} is gone)" in (
        caplog.text
    )
    assert result.global_step == saved + 4
    assert not (out / ".moma.lock").exists()
