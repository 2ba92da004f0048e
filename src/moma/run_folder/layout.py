"""Where a run's files live, and how a run started over keeps the previous one.

A run folder (``trainer.out_dir``) holds::

    config.yaml                    the resolved config of the run
    config_history/                configs replaced by a resume with --trainer.allow_config_change
    checkpoints/last.ckpt          the newest complete checkpoint
    backbone.safetensors, .json    the export (timm-loadable weights + their config)
    logs/version_N/metrics.csv     the metrics of attempt N (tb/: TensorBoard's copy)
    reconstructions.png            MAE's reconstruction figure
    target_cache.json              the teacher-target stores a distillation used
    results/<protocol>-<name>.json evaluation results
    cache/features/                the evaluation's feature cache
    replaced/<UTC time>/           a previous run, set aside by --trainer.resume never
    .moma.lock                     held while a process writes the folder

:class:`RunFolder` is the one place that spells these names.

``--trainer.resume never`` on a folder that holds a finished or interrupted run starts a new
run there. Replacing files one by one would leave a mix (the new ``config.yaml`` beside the
old checkpoint, which the next auto-resume would continue) if the new run fails early, and it
would lose the old run. So the previous run's outputs are moved, whole, into
``OUT/replaced/<UTC time>/`` before the new run writes anything.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from moma.errors import ConfigError
from moma.run_folder.lock import LOCK_NAME

log = logging.getLogger(__name__)

CONFIG = "config.yaml"
CONFIG_HISTORY = "config_history"
CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
EXPORT = "backbone.safetensors"
EXPORT_META = "backbone.json"
LOGS = "logs"
TENSORBOARD = "tb"
RECONSTRUCTIONS = "reconstructions.png"
TARGET_CACHE_RECORD = "target_cache.json"
RESULTS = "results"
CACHE = "cache"
FEATURE_CACHE = f"{CACHE}/features"
REPLACED = "replaced"

#: What moma writes into a run folder (a user's own files there are never moved).
RUN_OUTPUTS = (
    CHECKPOINTS,
    CONFIG,
    CONFIG_HISTORY,
    LOGS,
    TENSORBOARD,
    EXPORT,
    EXPORT_META,
    RECONSTRUCTIONS,
    RESULTS,
    CACHE,
)


@dataclass(frozen=True)
class RunFolder:
    """The files of the run folder ``root`` (nothing is created or read here)."""

    root: Path

    def __init__(self, root: str | os.PathLike) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def config_history(self) -> Path:
        return self.root / CONFIG_HISTORY

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def checkpoint(self) -> Path:
        """The newest complete checkpoint (``checkpoints/last.ckpt``)."""
        return self.checkpoints / LAST_CHECKPOINT

    @property
    def export(self) -> Path:
        """The exported backbone (``backbone.safetensors``; its config beside it, ``.json``)."""
        return self.root / EXPORT

    @property
    def logs(self) -> Path:
        return self.root / LOGS

    @property
    def tensorboard(self) -> Path:
        return self.root / TENSORBOARD

    @property
    def reconstructions(self) -> Path:
        return self.root / RECONSTRUCTIONS

    @property
    def target_cache_record(self) -> Path:
        return self.root / TARGET_CACHE_RECORD

    @property
    def results(self) -> Path:
        return self.root / RESULTS

    @property
    def feature_cache(self) -> Path:
        return self.root / FEATURE_CACHE

    @property
    def lock(self) -> Path:
        return self.root / LOCK_NAME

    def backbone_file(self) -> Path:
        """The weights an evaluation of this run reads: the export, else the last checkpoint."""
        for candidate in (self.export, self.checkpoint):
            if candidate.is_file():
                return candidate
        raise ConfigError(
            f"backbone folder {self.root} has no {EXPORT} or {CHECKPOINTS}/{LAST_CHECKPOINT}"
        )


def last_checkpoint(out_dir: str | os.PathLike) -> Path:
    """The path a run's newest complete checkpoint lives at."""
    return RunFolder(out_dir).checkpoint


def set_aside_previous_run(out_dir: Path) -> Path | None:
    """Move the previous run's outputs into ``out_dir/replaced/<UTC time>/``; returns that
    folder (None when there was nothing to move)."""
    out_dir = Path(out_dir)
    present = [name for name in RUN_OUTPUTS if os.path.lexists(out_dir / name)]
    if not present:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    dest = out_dir / REPLACED / stamp
    n = 1
    while dest.exists():
        n += 1
        dest = out_dir / REPLACED / f"{stamp}-{n}"
    dest.mkdir(parents=True)
    for name in present:
        os.replace(out_dir / name, dest / name)  # same filesystem: a rename, nothing copied
    log.warning(
        "--trainer.resume never: the previous run in %s was moved to %s (%s)",
        out_dir,
        dest,
        ", ".join(present),
    )
    return dest
