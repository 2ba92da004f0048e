"""``moma embed`` killed with SIGKILL part-way: the same command finishes the same file."""

from __future__ import annotations

import json
import signal
import time

import numpy as np
import torch
from PIL import Image

from faults.conftest import save_teacher
from faults.runs import start_cli, wait_until
from moma.cli.main import main


def _progress(path) -> int:
    try:
        return int(json.loads(path.read_text())["rows_done"])
    except (OSError, ValueError, KeyError):
        return 0


def test_sigkill_mid_embed_then_resume(tmp_path, rng):
    root = tmp_path / "imgs"
    root.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(1200):
        px = torch.randint(0, 256, (16, 16, 3), generator=g, dtype=torch.uint8)
        Image.fromarray(px.numpy()).save(root / f"{i:04d}.png")
    # 64 px (images upsampled): a run of seconds, so progress is committed (every half
    # second) well before it ends
    backbone = save_teacher(tmp_path / "backbone.safetensors", img_size=64)
    args = ["embed", f"--backbone={backbone}", f"--data.dataset={root}", "--batch_size=4",
            "--precision=32", "--progress_bar=false", "--device=cpu"]  # fmt: skip
    out = tmp_path / "emb.npy"
    progress = tmp_path / "emb.npy.progress.json"

    kill_at = rng.randrange(1, 40)  # rows committed before the kill, then a random moment
    child = start_cli([*args, f"--out={out}"], tmp_path / "killed.log")
    try:
        wait_until(lambda: _progress(progress) >= kill_at, 240, f"{kill_at} rows", child)
        time.sleep(rng.uniform(0.0, 0.05))
        child.signal(signal.SIGKILL)
        assert child.wait() == -signal.SIGKILL
    finally:
        child.stop()
    done = _progress(progress)
    assert kill_at <= done < 1200 and not out.exists()

    assert main([*args, f"--out={out}"]) == 0  # the same command resumes
    assert main([*args, f"--out={tmp_path / 'whole.npy'}"]) == 0  # one uninterrupted run
    np.testing.assert_array_equal(np.load(out), np.load(tmp_path / "whole.npy"))
    assert out.with_suffix(".csv").read_text() == (tmp_path / "whole.csv").read_text()
    assert not progress.exists() and not (tmp_path / "emb.npy.partial").exists()
