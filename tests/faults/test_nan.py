"""A NaN/Inf loss (or NaN weights) stops the run, names the step, keeps the last good checkpoint."""

from __future__ import annotations

import re

import pytest
import torch
from toy import ToyData, ToyMethod

from faults.runs import TRACEBACK, attempt_steps, error_lines
from moma.cli.main import main
from moma.errors import TrainingError
from moma.run_folder import read_metrics
from moma.run_folder.atomic import stale_temp_files
from moma.train import TrainerConfig, fit, last_checkpoint
from moma.train.fit import read_run_checkpoint


def _finite(ckpt: dict) -> bool:
    return all(
        torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point()
    )


def test_exploding_lr_stops_at_the_nan_step_and_keeps_the_last_good_checkpoint(
    tmp_path, distill, capsys
):
    """``moma distill --optim.base_lr 1e30``: the loss overflows within a few steps."""
    out = tmp_path / "run"
    rc = main(distill(out, max_steps=20, ckpt_every=1, extra=["--optim.base_lr=1e30"]))
    err = capsys.readouterr().err
    assert rc == 2 and TRACEBACK not in err
    (line,) = error_lines(err)
    m = re.fullmatch(
        r"moma: error: loss became (nan|inf|-inf) at step (\d+) \(last good checkpoint (.+) "
        r"kept\); try a lower --optim\.base_lr, --trainer\.precision 32-true or "
        r"--trainer\.gradient_clip_val 1\.0",
        line,
    )
    assert m, line
    bad_step, kept = int(m.group(2)), m.group(3)
    assert kept == str(last_checkpoint(out))
    ckpt = read_run_checkpoint(last_checkpoint(out), "moma")
    assert ckpt["global_step"] == bad_step  # the checkpoint right before the bad step
    assert _finite(ckpt)
    # the metrics name the same step: its logged loss is the non-finite one
    losses = dict(read_metrics(out))
    assert not torch.isfinite(torch.tensor(losses.get(bad_step, float("nan"))))
    assert all(torch.isfinite(torch.tensor(losses[s])) for s in range(bad_step))
    assert not stale_temp_files(out / "checkpoints") and not (out / ".moma.lock").exists()


class NaNGradients(ToyMethod):
    """A finite loss whose gradients turn NaN at ``at``: the weights go NaN, the loss not yet."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def on_after_backward(self) -> None:
        if self.global_step == self.at:
            for p in self.parameters():
                if p.grad is not None:
                    p.grad.fill_(float("nan"))


def test_nan_weights_with_a_finite_loss_are_never_checkpointed(tmp_path):
    out = tmp_path / "run"
    cfg = TrainerConfig(
        out_dir=str(out),
        max_steps=12,
        ckpt_every_n_steps=1,
        precision="32-true",
        accelerator="cpu",
        progress_bar=False,
        log_every_n_steps=1,
    )
    with pytest.raises(TrainingError) as info:
        fit(NaNGradients(at=5), ToyData(), cfg)
    msg = str(info.value)
    assert msg.startswith("weights became non-finite at step 6 (parameter ")
    assert f"last good checkpoint {last_checkpoint(out)} kept" in msg and "--optim.base_lr" in msg
    ckpt = read_run_checkpoint(last_checkpoint(out), "toy")
    assert ckpt["global_step"] == 5 and _finite(ckpt)
    assert attempt_steps(out)[0] == list(range(5))  # every step before the bad one logged
