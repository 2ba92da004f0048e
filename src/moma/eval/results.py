"""Result JSONs: ``OUT/results/<protocol>-<name>.json``, written atomically."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from moma.errors import ConfigError
from moma.run_folder import RunFolder, atomic_write_text

ROLES = ("baseline", "teacher", "student")

#: Keys every result JSON has (docs/ARCHITECTURE.md, "Shared contracts"); extras come after them.
RESULT_KEYS = (
    "metric",
    "value",
    "protocol",
    "features",
    "backbone",
    "backbone_sha256",
    "name",
    "role",
    "dataset",
    "seed",
    "wall_time_s",
)


def safe_name(name: str) -> str:
    """A file-name-safe version of a display name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"


def result_path(out_dir: Path, protocol: str, name: str) -> Path:
    """``out_dir/results/<protocol>-<name>.json``."""
    return RunFolder(out_dir).results / f"{protocol}-{safe_name(name)}.json"


def make_record(
    *,
    value: float,
    protocol: str,
    features: str,
    backbone: str,
    backbone_sha256: str | None,
    name: str,
    role: str,
    dataset: str,
    seed: int,
    wall_time_s: float,
    metric: str = "top1",
    **extras: Any,
) -> dict:
    """One result as a dict, standard keys first, then ``extras``."""
    record = {
        "metric": metric,
        "value": float(value),
        "protocol": protocol,
        "features": features,
        "backbone": str(backbone),
        "backbone_sha256": backbone_sha256,
        "name": name,
        "role": role,
        "dataset": dataset,
        "seed": int(seed),
        "wall_time_s": round(float(wall_time_s), 3),
    }
    record.update(extras)
    return record


def write_json_atomic(path: Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path``, atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_result(out_dir: Path, record: dict) -> Path:
    """Write one record to ``out_dir/results/<protocol>-<name>.json``; returns the path.

    Raises:
        ConfigError: the file holds the result of another name that maps to the same file
            name (``a/b`` and ``a_b``): replacing it would lose that result.
    """
    path = check_result_name(out_dir, record["protocol"], record["name"])
    return write_json_atomic(path, record)


def check_result_name(out_dir: Path, protocol: str, name: str) -> Path:
    """The result path of ``(protocol, name)``; ``ConfigError`` when an existing file there
    holds another name's result (``a/b`` and ``a_b`` share a file name)."""
    path = result_path(out_dir, protocol, name)
    other = _recorded_name(path)
    if other is not None and other != name:
        raise ConfigError(
            f"{path} holds the result of name {other!r}, and name {name!r} maps to the same "
            "file; choose another --name (or another --out_dir)"
        )
    return path


def _recorded_name(path: Path) -> str | None:
    """The ``name`` in an existing result file (None: no file, or not a readable record)."""
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    name = rec.get("name") if isinstance(rec, dict) else None
    return name if isinstance(name, str) else None
