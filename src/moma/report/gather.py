"""Find what a report is built from: result JSONs, CSV training logs, reconstruction PNGs."""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from moma.errors import ConfigError
from moma.paths import regular_file
from moma.run_folder.layout import LOGS, RECONSTRUCTIONS, RESULTS
from moma.run_folder.metrics import METRICS_FILE, log_columns, merge_attempts, read_series

log = logging.getLogger(__name__)

LOSS_COLUMNS = ("train/loss", "train/loss_step", "train_loss", "loss")


def load_results(run_dirs: list[Path]) -> list[dict]:
    """All ``results/*.json`` records under ``run_dirs`` (searched recursively).

    A record needs ``protocol``, ``value`` and ``name`` (or ``backbone``); others are skipped
    with a warning. Duplicates of (dataset, protocol, name, features) keep the newest file.
    """
    found: dict[tuple, tuple[float, dict]] = {}
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        paths = sorted(run_dir.rglob(f"{RESULTS}/*.json"))
        if run_dir.name == RESULTS:
            paths += sorted(run_dir.glob("*.json"))
        for path in paths:
            try:
                rec = json.loads(regular_file(path, ConfigError, "result file").read_text())
            except (ConfigError, OSError, ValueError) as exc:
                log.warning("skipping unreadable result %s: %s", path, exc)
                continue
            problem = record_problem(rec)
            if problem:
                log.warning("skipping %s: not a result record (%s)", path, problem)
                continue
            rec.setdefault("name", Path(str(rec.get("backbone", path.stem))).stem)
            rec.setdefault("role", "student")
            rec.setdefault("features", "?")
            rec["_source"] = str(path)
            key = (rec.get("dataset"), rec["protocol"], rec["name"], rec["features"])
            mtime = path.stat().st_mtime
            if key in found and found[key][1]["_source"] != str(path):
                log.warning("duplicate result %s: keeping the newest file", key)
                if found[key][0] > mtime:
                    continue
            found[key] = (mtime, rec)
    return [rec for _, rec in found.values()]


def record_problem(rec: object) -> str | None:
    """What makes ``rec`` unusable as a result record (None: usable).

    A record is a JSON object with a string ``protocol`` and a finite number ``value``;
    ``name``, ``role``, ``features`` and ``dataset``, when present, are strings (or null).
    """
    if not isinstance(rec, dict):
        return f"a JSON {type(rec).__name__}, not an object"
    if not isinstance(rec.get("protocol"), str):
        return "'protocol' is missing or not a string"
    value = rec.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return f"'value' is {value!r}, not a finite number"
    for key in ("name", "role", "features", "dataset", "backbone"):
        if not isinstance(rec.get(key), str | None):
            return f"{key!r} is {rec[key]!r}, not a string"
    return None


@dataclass
class LossCurve:
    """One run's training loss: label, optimiser steps, values and the CSV column used."""

    label: str
    steps: list[float]
    losses: list[float]
    column: str


def _loss_column(header: list[str]) -> str | None:
    for col in LOSS_COLUMNS:
        if col in header:
            return col
    for col in header:
        if col.startswith("train") and "loss" in col:
            return col
    return None


def read_loss_curve(path: Path, label: str | None = None) -> LossCurve | None:
    """The training loss from a Lightning ``CSVLogger`` ``metrics.csv`` (``None`` if absent
    or unreadable, with a warning)."""
    try:
        col = _loss_column(log_columns(path))
        points = read_series(path, col) if col is not None else []
    except (ConfigError, OSError, UnicodeDecodeError, csv.Error) as exc:
        log.warning("skipping unreadable training log %s: %s", path, exc)
        return None
    points = [(s, v) for s, v in points if math.isfinite(s) and math.isfinite(v)]
    if not points:
        return None
    steps, losses = (list(x) for x in zip(*points))
    return LossCurve(label or path.parent.name, steps, losses, col)


def _run_root(path: Path) -> tuple[Path, int]:
    """The run folder a ``metrics.csv`` belongs to, and its attempt number.

    ``OUT/logs/version_3/metrics.csv`` (moma's layout, one version per resumed attempt) and
    ``OUT/lightning_logs/version_3/metrics.csv`` belong to ``OUT``; ``OUT/metrics.csv`` too.
    """
    parent = path.parent
    if parent.name.startswith("version_") and parent.parent.name in (LOGS, "lightning_logs"):
        try:
            version = int(parent.name.split("_")[-1])
        except ValueError:
            version = 0
        return parent.parent.parent, version
    return parent, -1


def find_loss_curves(run_dirs: list[Path]) -> list[LossCurve]:
    """One training-loss curve per run under ``run_dirs``, from its ``metrics.csv`` logs.

    The attempts of a resumed run (``logs/version_*``) are merged by step, later attempts
    winning. Curves are labelled by the run folder relative to the given folder's parent.
    """
    curves = []
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        runs: dict[Path, list[tuple[int, Path]]] = {}
        for path in sorted(run_dir.rglob(METRICS_FILE)):
            root, version = _run_root(path)
            runs.setdefault(root, []).append((version, path))
        for root, files in sorted(runs.items()):
            attempts = [c for c in (read_loss_curve(p) for _, p in sorted(files)) if c is not None]
            if not attempts:
                continue
            merged = merge_attempts(list(zip(c.steps, c.losses)) for c in attempts)
            rel = root.relative_to(run_dir) if root != run_dir else Path()
            label = run_dir.name if str(rel) == "." else f"{run_dir.name}/{rel}"
            steps = [s for s, _ in merged]
            curves.append(LossCurve(label, steps, [v for _, v in merged], attempts[0].column))
    return curves


def find_reconstructions(run_dirs: list[Path]) -> list[tuple[str, Path]]:
    """``(run label, path)`` of MAE reconstruction PNGs (``reconstructions*.png``)."""
    out = []
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        for path in sorted(run_dir.rglob(f"{Path(RECONSTRUCTIONS).stem}*.png")):
            out.append((run_dir.name, path))
    return out
