"""A 2-process DDP MOMA run (CPU, gloo) completes and its student loads with load_backbone.

Lightning's ``ddp`` launcher re-executes the current command for each extra process
(docs/DESIGN.md, section 6), so the run is the ``moma distill`` command in a subprocess.
"""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("moma.data")
checkpoint = pytest.importorskip("moma.models.checkpoint")
pytest.importorskip("moma.models.export")

from toy import TINY  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _image_folder(root: Path, per_class: int = 8) -> Path:
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            px = (torch.rand(16, 16, 3, generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(px).save(root / cls / f"{i}.png")
    return root


def _ddp_distill(tmp_path, *extra: str) -> tuple[subprocess.CompletedProcess, Path]:
    """``moma distill`` with 2 CPU processes (gloo) on a 16-image folder, tiny models."""
    teacher = tmp_path / "teacher.pth"
    torch.manual_seed(1)
    torch.save(TINY.build().state_dict(), teacher)
    data = _image_folder(tmp_path / "images")
    out = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "moma.cli.main",
        "distill",
        "--config",
        str(REPO / "configs/moma/fashion_mnist_mocov3_to_mae.yaml"),
        "--data.dataset",
        str(data),
        "--data.img_size",
        "16",
        "--data.batch_size",
        "4",
        "--teachers",
        json.dumps([{"path": str(teacher), "name": "t", "format": "timm"}]),
        "--student.init",
        "random",
        "--student.backbone",
        json.dumps(dataclasses.asdict(TINY)),
        "--trainer.out_dir",
        str(out),
        "--trainer.max_steps",
        "3",
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "2",
        "--trainer.strategy",
        "ddp",
        "--trainer.progress_bar",
        "false",
        "--trainer.log_every_n_steps",
        "1",
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    r = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    return r, out


def test_ddp_two_processes(tmp_path):
    r, out = _ddp_distill(tmp_path)
    assert "MEMBER: 2/2" in r.stderr  # really two processes

    ck = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ck["global_step"] == 3
    assert not any(k.startswith("teachers.") for k in ck["state_dict"])
    student = checkpoint.load_backbone(out / "backbone.safetensors")
    assert student.embed_dim == 32 and len(student.blocks) == 2
    for k, v in student.state_dict().items():
        assert torch.equal(v, ck["state_dict"][f"student.{k}"]), k


def test_ddp_target_cache_each_rank_builds_its_share(tmp_path):
    r, out = _ddp_distill(tmp_path, "--cache.views", "2")
    assert "MEMBER: 2/2" in r.stderr
    summary = json.loads((out / "target_cache.json").read_text())
    rec = summary["teachers"][0]
    assert rec["chunks"] == 16 and rec["built_chunks"] == 8  # rank 0 built half
    store = Path(rec["folder"])
    assert len(list((store / "chunks").glob("*.sha256"))) == 16  # rank 1 the other half
    ck = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ck["global_step"] == 3
