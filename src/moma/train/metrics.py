"""Read the CSV metrics a run logged (one file per attempt when a run was resumed)."""

from __future__ import annotations

import csv
from pathlib import Path


def read_metrics(run_dir: str | Path, key: str = "train/loss") -> list[tuple[int, float]]:
    """``(step, value)`` pairs of ``key`` over all attempts of a run, later attempts winning."""
    by_step: dict[int, float] = {}
    files = sorted(
        Path(run_dir).glob("logs/version_*/metrics.csv"),
        key=lambda p: int(p.parent.name.split("_")[-1]),
    )
    for path in files:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                v = row.get(key)
                if v not in (None, "") and row.get("step") not in (None, ""):
                    by_step[int(float(row["step"]))] = float(v)
    return sorted(by_step.items())
