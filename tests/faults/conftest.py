"""Fixtures of the fault-injection suite: tiny teachers, data, a finished tiny MOMA run."""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from toy import TINY

from faults.runs import FASHION_MNIST, distill_args
from moma.models.vit import BackboneConfig


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on two shared cores two OpenMP threads make tiny steps ~20x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def rng(request) -> random.Random:
    """A random generator whose seed is printed with a failure (``FAULTS_SEED`` fixes it)."""
    seed = int(os.environ.get("FAULTS_SEED", random.SystemRandom().randrange(1 << 30)))
    request.node.user_properties.append(("faults_seed", seed))
    print(f"FAULTS_SEED={seed}")  # shown by pytest with the failure report
    return random.Random(seed)


def save_teacher(path: Path, seed: int = 1, **overrides) -> Path:
    """A tiny ViT teacher as a moma export (``.safetensors`` + ``.json``)."""
    from moma.models.export import export_backbone

    torch.manual_seed(seed)
    cfg = BackboneConfig(**{**TINY.__dict__, **overrides})
    export_backbone(cfg.build(), path, arch=cfg.arch)
    return path


@pytest.fixture(scope="session")
def teacher(tmp_path_factory) -> Path:
    """A tiny teacher file shared by the session (tests that change it use their own)."""
    return save_teacher(tmp_path_factory.mktemp("teacher") / "teacher.safetensors")


@pytest.fixture(scope="session")
def data_args(tmp_path_factory) -> list[str]:
    """A 256-image Fashion-MNIST subset, or a folder of random PNGs where it is not installed."""
    if (FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        return ["--data.dataset=fashion_mnist", f"--data.root={FASHION_MNIST}", "--data.subset=256"]
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    g = torch.Generator().manual_seed(0)
    for i in range(64):
        px = torch.randint(0, 256, (16, 16, 3), generator=g, dtype=torch.uint8)
        Image.fromarray(px.numpy()).save(folder / f"{i:03d}.png")
    return [f"--data.dataset={folder}"]


@pytest.fixture
def distill(teacher, data_args) -> Callable[..., list[str]]:
    """``distill(out_dir, max_steps=8, ckpt_every=2, extra=[...])`` -> tiny ``moma distill`` args."""

    def make(out_dir: Path, **kw) -> list[str]:
        return distill_args(out_dir, kw.pop("teacher", teacher), data_args, **kw)

    return make


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, teacher, data_args) -> tuple[Path, list[str]]:
    """A finished 4-step tiny MOMA run (in-process ``moma distill``) and its arguments."""
    from moma.cli.main import main

    out = tmp_path_factory.mktemp("finished") / "run"
    args = distill_args(out, teacher, data_args, max_steps=4, ckpt_every=2)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(args) == 0
    finally:
        torch.set_num_threads(before)
    return out, args


@pytest.fixture
def run_copy(finished_run, tmp_path) -> tuple[Path, list[str]]:
    """A private copy of the finished run (to damage), with the arguments pointing at it."""
    src, args = finished_run
    dst = tmp_path / "run"
    shutil.copytree(src, dst)
    return dst, [a.replace(str(src), str(dst)) for a in args]
