"""Multi-process training on CPU (DDP, gloo, 2 processes).

Lightning's ``ddp`` launcher re-executes the current command for each extra process, so the
runs happen in a small script launched in a subprocess, never inside pytest's own process
(docs/DESIGN.md, section 6).
"""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

MOCOV3_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    from moma.methods import mocov3_loss
    from moma.methods.mocov3 import MoCoV3Config, MoCoV3Method
    from moma.methods.optim import OptimConfig
    from moma.train import TrainerConfig, fit
    from toy import TINY, ToyTwoViewData

    out = sys.argv[1]
    gathered = []
    real_gather = mocov3_loss.concat_all_gather

    def spy(x):
        y = real_gather(x)
        gathered.append([int(x.shape[0]), int(y.shape[0])])
        return y

    mocov3_loss.concat_all_gather = spy
    cfg = MoCoV3Config(proj_hidden_dim=32, proj_dim=8, pred_hidden_dim=32)
    model = MoCoV3Method(cfg, TINY, OptimConfig(base_lr=1e-3))
    trainer = TrainerConfig(out_dir=out, max_steps=2, precision="32-true", accelerator="cpu",
                            devices=2, strategy="ddp", progress_bar=False, ckpt_every_n_steps=1,
                            log_every_n_steps=1)
    r = fit(model, ToyTwoViewData(n=32, batch_size=4), trainer)
    rank = int(torch.distributed.get_rank()) if torch.distributed.is_initialized() else int(
        os.environ.get("LOCAL_RANK", 0))
    train_gathered = list(gathered)
    # labels are arange(N) + N * rank: orthonormal q = k rows give the analytic value
    eye = torch.eye(8, 16)[4 * rank : 4 * rank + 4]
    analytic = float(model.loss_fn(eye, eye, eye, eye))
    sums = {k: float(sum(p.double().sum() for p in getattr(model, k).parameters()))
            for k in ("base_encoder", "momentum_encoder", "predictor")}
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"rank": rank, "gathered": train_gathered, "step": r.global_step, "sums": sums, "analytic": analytic,
                   "export": str(r.export) if r.export else None}, f)
    """
)


def test_mocov3_ddp_two_cpu_processes_gather_keys(tmp_path):
    script = tmp_path / "ddp_mocov3.py"
    script.write_text(MOCOV3_SCRIPT)
    out = tmp_path / "run"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    for k in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_PORT", "MASTER_ADDR"):
        env.pop(k, None)
    p = subprocess.run(
        [sys.executable, str(script), str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    for info in ranks:
        assert info["step"] == 2
        # 2 steps x 2 directions: 4 local keys gathered into 8 = the global batch of negatives
        assert info["gathered"] == [[4, 8]] * 4, info
        t = 0.2
        assert info["analytic"] == pytest.approx(2 * 2 * t * math.log(1 + 7 * math.exp(-1 / t)))
    # gradients are averaged: both processes hold the same weights after each step
    assert ranks[0]["sums"] == pytest.approx(ranks[1]["sums"], rel=1e-6)
    assert ranks[0]["export"] and Path(ranks[0]["export"]).exists() and ranks[1]["export"] is None
