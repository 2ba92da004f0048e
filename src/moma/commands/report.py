"""``moma report``: the results table and figures of a set of run folders (the report itself
is :func:`moma.report.build.build_report`)."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from moma.data.config import DataConfig
from moma.errors import ConfigError
from moma.paths import output_folder
from moma.report.build import build_report
from moma.report.gather import load_results
from moma.report.table import format_table
from moma.validation import prepare_run

log = logging.getLogger(__name__)


@dataclass
class ReportConfig:
    """What ``moma report`` takes.

    Attributes:
        runs: folders searched (recursively) for ``results/*.json``, ``metrics.csv`` logs and
            ``reconstructions*.png``.
        out_dir: where ``report.md`` and the PNG figures go.
        title: report title.
        attention: draw CLS attention maps of every backbone file the results name.
        data: dataset whose first test images the attention maps show (and whose test split
            the feature maps use for models without cached features).
        num_images: images in the attention figure.
        feature_map: draw a t-SNE map of every model's test features next to the table.
        map_points: test images in each map (a fixed subsample).
    """

    runs: list[str] = field(default_factory=lambda: ["runs"])
    out_dir: str = "runs/report"
    title: str = "moma evaluation report"
    attention: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    num_images: int = 4
    feature_map: bool = True
    map_points: int = 2000


def run_report(cfg: ReportConfig) -> Path:
    """Build the report, print the Markdown table and return the path of ``report.md``."""
    cfg = prepare_run(cfg)
    out_dir = output_folder(cfg.out_dir, "out_dir")
    runs = [Path(r) for r in cfg.runs]
    missing = [str(r) for r in runs if not r.exists()]
    if missing:
        raise ConfigError(f"report: run folder(s) not found: {', '.join(missing)}")
    path = build_report(
        runs,
        out_dir,
        title=cfg.title,
        data_cfg=cfg.data if cfg.attention else None,
        num_images=cfg.num_images,
        feature_map=cfg.feature_map,
        map_points=cfg.map_points,
    )
    sys.stdout.write(format_table(load_results(runs)))
    log.info("report: %s", path)
    return path
