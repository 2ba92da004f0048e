"""The results table in Markdown: rows = models (baselines, teachers, students), columns = protocols."""

from __future__ import annotations

import re
from collections.abc import Iterable

ROLE_ORDER = ("baseline", "teacher", "student")
PROTOCOL_ORDER = ("knn-k20", "knn-k200", "linear", "finetune")


def protocol_sort_key(protocol: str) -> tuple:
    """Standard protocols first in their usual order, then the others (kNN by k)."""
    if protocol in PROTOCOL_ORDER:
        return (0, PROTOCOL_ORDER.index(protocol), 0, protocol)
    m = re.fullmatch(r"knn-k(\d+)", protocol)
    if m:
        return (1, 0, int(m.group(1)), protocol)
    return (2, 0, 0, protocol)


def role_sort_key(role: str) -> int:
    """Baselines, then teachers, then students, then anything else."""
    return ROLE_ORDER.index(role) if role in ROLE_ORDER else len(ROLE_ORDER)


def protocols_of(rows: Iterable[dict]) -> list[str]:
    """The protocols present, in table order."""
    return sorted({r["protocol"] for r in rows}, key=protocol_sort_key)


ModelKey = tuple[str, str, str, str]  # role, name, features, dataset


def group_models(rows: Iterable[dict]) -> list[tuple[ModelKey, dict[str, dict]]]:
    """``[((role, name, features, dataset), {protocol: record})]`` in table order."""
    models: dict[ModelKey, dict[str, dict]] = {}
    for r in rows:
        key = (
            str(r.get("role", "student")),
            str(r.get("name", "?")),
            str(r.get("features", "?")),
            str(r.get("dataset")),
        )
        models.setdefault(key, {})[r["protocol"]] = r
    return sorted(models.items(), key=lambda kv: (role_sort_key(kv[0][0]), *kv[0][1:]))


def format_duration(seconds: float, hour_digits: int = 2) -> str:
    """``12.3 s``, ``4.5 min`` or ``1.25 h`` (``hour_digits`` decimals for hours)."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.{hour_digits}f} h"


def _fmt_count(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return f"{int(n)}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _first(recs: dict[str, dict], key: str) -> float | None:
    for r in recs.values():
        v = r.get(key)
        if isinstance(v, int | float):
            return float(v)
    return None


def _eval_time(recs: dict[str, dict]) -> float:
    """Total eval wall time; the kNN results of one run share a time, counted once."""
    seen: dict[str, float] = {}
    for proto, r in recs.items():
        family = "knn" if proto.startswith("knn") else proto
        seen[family] = max(seen.get(family, 0.0), float(r.get("wall_time_s", 0.0) or 0.0))
    return sum(seen.values())


def format_table(rows: list[dict]) -> str:
    """A Markdown table of result records (top-1 %, one row per model and feature type).

    Columns: role, model, features, one per protocol, then compute columns when any record
    has them: training optimiser steps (``train_steps``), images processed
    (``train_images``), training wall time (``train_wall_time_s``), and always the
    evaluations' wall time. A dataset column is added when
    the records come from more than one dataset.
    """
    rows = [r for r in rows if "protocol" in r and "value" in r]
    if not rows:
        return "_no results_\n"
    protocols = protocols_of(rows)
    datasets = sorted({str(r.get("dataset")) for r in rows})
    models = group_models(rows)
    has_steps = any(_first(recs, "train_steps") is not None for _, recs in models)
    has_imgs = any(_first(recs, "train_images") is not None for _, recs in models)
    has_time = any(_first(recs, "train_wall_time_s") is not None for _, recs in models)
    header = ["Role", "Model", "Features"]
    if len(datasets) > 1:
        header.append("Dataset")
    header += [f"{p} top-1 (%)" for p in protocols]
    if has_steps:
        header.append("Train steps")
    if has_imgs:
        header.append("Train images")
    if has_time:
        header.append("Train time")
    header.append("Eval time")
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 3 + ["---:"] * (len(header) - 3)) + "|",
    ]
    for (role, name, features, dataset), recs in models:
        cells = [role, _cell(name), features]
        if len(datasets) > 1:
            cells.append(_cell(dataset))
        for p in protocols:
            cells.append(f"{recs[p]['value']:.1f}" if p in recs else "–")
        if has_steps:
            v = _first(recs, "train_steps")
            cells.append(f"{int(v)}" if v is not None else "–")
        if has_imgs:
            v = _first(recs, "train_images")
            cells.append(_fmt_count(v) if v is not None else "–")
        if has_time:
            v = _first(recs, "train_wall_time_s")
            cells.append(format_duration(v) if v is not None else "–")
        cells.append(format_duration(_eval_time(recs)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
