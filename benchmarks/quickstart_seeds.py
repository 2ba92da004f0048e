"""Several `moma quickstart` runs (one per seed) as one table: mean +- sample std per model.

    for s in 0 1 2; do moma quickstart --budget default --seed $s --out runs/qs-s$s; done
    python benchmarks/quickstart_seeds.py runs/qs-s0 runs/qs-s1 runs/qs-s2 --out runs/qs-seeds.md

Reads each run's ``eval/results/*.json`` and ``stages.json``; writes a Markdown table (and
prints it), the per-seed values, each stage's wall time, and for every student whether its
*mean* beats the mean of each of its teachers on kNN k=20 and on the linear probe.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

METRICS = ("knn-k20", "knn-k200", "linear")
TEACHERS = ("mae", "mocov3")


def load_run(folder: Path) -> dict[tuple[str, str], float]:
    """{(model, metric): top-1 %} of one quickstart run."""
    out = {}
    for f in sorted((folder / "eval" / "results").glob("*.json")):
        r = json.loads(f.read_text())
        metric = f.stem[: -len(r["name"]) - 1]  # files are named <metric>-<model>.json
        out[(r["name"], metric)] = float(r["value"])
    if not out:
        raise SystemExit(f"{folder}: no eval/results/*.json (is this a quickstart folder?)")
    return out


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} +- {statistics.stdev(values):.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="quickstart output folders, one per seed")
    p.add_argument("--out", type=Path, default=None, help="write the Markdown here too")
    args = p.parse_args()
    runs = [load_run(r) for r in args.runs]
    models = sorted({m for run in runs for m, _ in run}, key=lambda m: (m.startswith("moma"), m))
    lines = [
        f"{len(runs)} run(s): " + ", ".join(str(r) for r in args.runs),
        "",
        "| model | " + " | ".join(f"{m} top-1 (%)" for m in METRICS) + " | per seed (kNN k=20 / linear) |",
        "| --- | " + " | ".join("---:" for _ in METRICS) + " | --- |",
    ]  # fmt: skip
    mean: dict[tuple[str, str], float] = {}
    for model in models:
        cells = []
        for metric in METRICS:
            vals = [run[(model, metric)] for run in runs if (model, metric) in run]
            cells.append(spread(vals) if vals else "-")
            if vals:
                mean[(model, metric)] = statistics.mean(vals)
        per_seed = ", ".join(
            f"{run.get((model, 'knn-k20'), float('nan')):.1f} / "
            f"{run.get((model, 'linear'), float('nan')):.1f}"
            for run in runs
        )
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {per_seed} |")
    lines += ["", "Means against the teachers' means:"]
    for model in (m for m in models if m.startswith("moma")):
        for metric in ("knn-k20", "linear"):
            s = mean.get((model, metric))
            ts = {t: mean.get((t, metric)) for t in TEACHERS}
            if s is None or None in ts.values():
                continue
            beats = all(s > t for t in ts.values())
            lines.append(
                f"- {model} {metric}: {s:.2f} vs "
                + ", ".join(f"{t} {v:.2f}" for t, v in ts.items())
                + (" -> beats both" if beats else " -> does not beat both")
            )
    pix = mean.get(("raw-pixels", "linear"))
    best = max(((mean[(m, "linear")], m) for m in models if m.startswith("moma")), default=None)
    if pix is not None and best is not None:
        lines.append(f"- best student linear: {best[1]} {best[0]:.2f} vs raw pixels {pix:.2f}")
    lines += ["", "| run | stage wall times (s) |", "| --- | --- |"]
    for folder in args.runs:
        stages = json.loads((folder / "stages.json").read_text())
        total = sum(float(v.get("wall_time_s") or 0) for v in stages.values())
        cells = ", ".join(f"{k} {float(v.get('wall_time_s') or 0):.0f}" for k, v in stages.items())
        lines.append(f"| {folder.name} | {cells}; sum {total:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
