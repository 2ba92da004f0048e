"""``moma eval knn|linear|finetune``: one protocol on one backbone, its result JSON and the
printed table.

The protocols themselves (:func:`moma.eval.run.run_eval`) are the eval floor's; a command adds
the defaults a user expects (name and results folder from the backbone's run folder) and
prints the table (:mod:`moma.report.table`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from moma.data.config import DataConfig
from moma.eval.baselines import BASELINES
from moma.eval.config import FinetuneConfig, KnnConfig, LinearConfig
from moma.eval.run import run_eval
from moma.models.vit import BackboneConfig
from moma.report.table import format_table
from moma.run_folder.layout import CHECKPOINTS
from moma.validation import prepare_run


@dataclass
class EvalRunConfig:
    """What every ``moma eval`` subcommand takes.

    Attributes:
        backbone: a weights file, a run folder (its ``backbone.safetensors``), ``raw-pixels``
            or ``random-init``.
        name: display name in tables and result file names (default: the baseline name, or
            the run folder / file name).
        role: ``baseline``, ``teacher`` or ``student`` (default: ``baseline`` for baselines,
            else ``student``).
        out_dir: where ``results/`` goes (default: the backbone's folder; ``runs/baselines``
            for baselines).
        data: the dataset (train split = kNN bank / training set, test split = evaluation).
        random_init: architecture of the ``random-init`` baseline.
        arch: timm architecture hint for loading a weights file.
        seed: seed of the random-init weights, the probe and fine-tuning.
        device: torch device (default: CUDA if available, else CPU).
    """

    backbone: str = "random-init"
    name: str | None = None
    role: str | None = None
    out_dir: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    random_init: BackboneConfig = field(default_factory=BackboneConfig)
    arch: str | None = None
    seed: int = 0
    device: str | None = None


@dataclass
class KnnRunConfig(EvalRunConfig):
    """``moma eval knn``: weighted cosine kNN on frozen features."""

    knn: KnnConfig = field(default_factory=KnnConfig)


@dataclass
class LinearRunConfig(EvalRunConfig):
    """``moma eval linear``: linear probe on frozen (cached) features."""

    linear: LinearConfig = field(default_factory=LinearConfig)


@dataclass
class FinetuneRunConfig(EvalRunConfig):
    """``moma eval finetune``: full fine-tuning with layer-wise lr decay."""

    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


def default_name(backbone: str) -> str:
    """A display name from a spec: the baseline name, else the run folder or file stem."""
    if backbone in BASELINES:
        return backbone
    path = Path(backbone)
    if path.is_dir() or path.stem in ("backbone", "last"):
        run = path if path.is_dir() else path.parent
        return (run.parent if run.name == CHECKPOINTS else run).resolve().name
    return path.stem


def default_out_dir(backbone: str) -> Path:
    """Results go next to the backbone (its run folder); baselines to ``runs/baselines``."""
    if backbone in BASELINES:
        return Path("runs/baselines")
    path = Path(backbone)
    run = path if path.is_dir() else path.parent
    return run.parent if run.name == CHECKPOINTS else run


def _run(protocol: str, cfg: EvalRunConfig) -> dict[str, dict]:
    cfg = prepare_run(cfg)
    role = cfg.role or ("baseline" if cfg.backbone in BASELINES else "student")
    records = run_eval(
        protocol,
        cfg.backbone,
        cfg.data,
        Path(cfg.out_dir) if cfg.out_dir else default_out_dir(cfg.backbone),
        cfg.name or default_name(cfg.backbone),
        role,
        config=getattr(cfg, protocol),
        backbone_cfg=cfg.random_init,
        arch=cfg.arch,
        seed=cfg.seed,
        device=cfg.device,
    )
    sys.stdout.write(format_table(list(records.values())))
    return records


def run_knn(cfg: KnnRunConfig) -> dict[str, dict]:
    """``moma eval knn``: writes ``results/knn-k<k>-<name>.json`` and prints the table."""
    return _run("knn", cfg)


def run_linear(cfg: LinearRunConfig) -> dict[str, dict]:
    """``moma eval linear``: writes ``results/linear-<name>.json`` and prints the table."""
    return _run("linear", cfg)


def run_finetune(cfg: FinetuneRunConfig) -> dict[str, dict]:
    """``moma eval finetune``: writes ``results/finetune-<name>.json`` and prints the table."""
    return _run("finetune", cfg)
