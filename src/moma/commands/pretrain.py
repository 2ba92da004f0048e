"""``moma pretrain mae`` and ``moma pretrain mocov3``: the teachers' pre-training runs.

Each run is validated and seeded once (:func:`moma.validation.prepare_run`), builds its
LightningModule from :mod:`moma.methods`, and trains it with :func:`moma.train.fit`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from moma.commands.record import config_to_dict
from moma.data import SSLDataModule
from moma.data.config import DataConfig
from moma.methods.mae import MAEConfig, MAEMethod
from moma.methods.mae_figures import save_training_reconstructions
from moma.methods.mocov3 import MoCoV3Config, MoCoV3Method, mocov3_optim
from moma.methods.optim import OptimConfig
from moma.models.vit import BackboneConfig
from moma.train import RunResult, fit
from moma.train.config import TrainerConfig
from moma.validation import prepare_run

log = logging.getLogger(__name__)

RECONSTRUCTIONS_FILE = "reconstructions.png"
NUM_FIGURE_IMAGES = 8


@dataclass
class MAERunConfig:
    """Everything ``moma pretrain mae`` takes (YAML sections mirror these fields).

    The global batch is ``data.batch_size * trainer.devices * trainer.num_nodes *
    trainer.accumulate_grad_batches``; the peak lr is ``optim.base_lr * global batch / 256``.
    """

    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    mae: MAEConfig = field(default_factory=MAEConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)  # MAE's: 1.5e-4, 0.05, (0.9, 0.95)
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(out_dir="runs/mae"))


@dataclass
class MoCoV3RunConfig:
    """Everything ``moma pretrain mocov3`` takes (YAML sections mirror these fields).

    The global batch is ``data.batch_size * trainer.devices * trainer.num_nodes *
    trainer.accumulate_grad_batches``; it sets the peak lr (``optim.base_lr * batch / 256``)
    and it is the number of keys each query is contrasted with.
    """

    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    mocov3: MoCoV3Config = field(default_factory=MoCoV3Config)
    optim: OptimConfig = field(default_factory=mocov3_optim)
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(out_dir="runs/mocov3"))


def run_mae(cfg: MAERunConfig) -> RunResult:
    """Pre-train an MAE: ``moma pretrain mae``.

    After a completed run, rank 0 also saves ``OUT/reconstructions.png`` (input / masked /
    reconstruction of 8 fixed training images).
    """
    cfg = prepare_run(cfg)  # paths expanded, values checked, seeded before the models are built
    module = MAEMethod(cfg.mae, cfg.backbone, cfg.optim)
    dm = SSLDataModule(cfg.data, views=1, augment="mae")
    result = fit(module, dm, cfg.trainer, config_to_dict(cfg))
    if result.export is not None:  # rank 0 of a completed run
        try:
            save_training_reconstructions(
                module, cfg.data, Path(result.out_dir) / RECONSTRUCTIONS_FILE, NUM_FIGURE_IMAGES
            )
        except Exception as e:  # a figure must never fail a finished run
            log.warning("could not save the reconstruction figure: %s", e)
    return result


def run_mocov3(cfg: MoCoV3RunConfig) -> RunResult:
    """Pre-train MoCo v3: ``moma pretrain mocov3``."""
    cfg = prepare_run(cfg)  # paths expanded, values checked, seeded before the models are built
    module = MoCoV3Method(cfg.mocov3, cfg.backbone, cfg.optim)
    dm = SSLDataModule(cfg.data, views=2, augment="mocov3")
    return fit(module, dm, cfg.trainer, config_to_dict(cfg))
