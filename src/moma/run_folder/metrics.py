"""The metrics a run logged, read back: ``logs/version_N/metrics.csv``, one CSV per attempt.

Lightning's CSV logger writes one row per logged step with one column per metric (a row
leaves the metrics it does not log empty). A resumed run is a new attempt (a new version)
that logs again the steps after its checkpoint, so series are merged by step, later attempts
winning. Training (``read_metrics``) and reports (``moma.report.gather``) read through here.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

from moma.errors import ConfigError
from moma.paths import regular_file
from moma.run_folder.layout import RunFolder

Series = list[tuple[float, float]]  # (step, value) pairs
METRICS_FILE = "metrics.csv"  # Lightning's CSVLogger writes this name


def attempt_logs(run_dir: str | Path) -> list[Path]:
    """The run's metrics CSVs, one per attempt, the first attempt first."""
    logs = RunFolder(run_dir).logs
    return sorted(logs.glob(f"version_*/{METRICS_FILE}"), key=lambda p: _version(p.parent.name))


def _version(name: str) -> int:
    try:
        return int(name.split("_")[-1])
    except ValueError:
        return -1


def log_columns(path: str | Path) -> list[str]:
    """The column names of one metrics CSV (a FIFO or a folder is refused, never opened)."""
    with open(regular_file(path, ConfigError, "CSV log"), newline="") as f:
        return list(csv.DictReader(f).fieldnames or [])


def read_series(path: str | Path, key: str) -> Series:
    """``(step, value)`` of every row of one metrics CSV that sets both (NaN values kept);
    ``[]`` when the file has no such column."""
    out: Series = []
    with open(regular_file(path, ConfigError, "CSV log"), newline="") as f:
        for row in csv.DictReader(f):
            try:
                out.append((float(row["step"]), float(row[key])))
            except (KeyError, TypeError, ValueError):
                continue  # rows of other metrics leave this column empty
    return out


def merge_attempts(series: Iterable[Series]) -> Series:
    """One series from the attempts' series (in attempt order): by step, later ones winning."""
    by_step: dict[float, float] = {}
    for s in series:
        by_step.update(s)
    return sorted(by_step.items())


def read_metrics(run_dir: str | Path, key: str = "train/loss") -> list[tuple[int, float]]:
    """``(step, value)`` pairs of ``key`` over all attempts of a run, later attempts winning."""
    merged = merge_attempts(read_series(p, key) for p in attempt_logs(run_dir))
    return [(int(step), value) for step, value in merged]
