"""A run config as plain data: what checkpoints, ``config.yaml`` and result files record."""

from __future__ import annotations

import dataclasses
import os
from typing import Any


def config_to_dict(cfg: Any) -> dict:
    """A config dataclass as plain data (what checkpoints and ``config.yaml`` store)."""
    return plain(dataclasses.asdict(cfg))


def plain(x: Any) -> Any:
    """``x`` with dataclasses as dicts, tuples as lists and paths as strings (YAML-safe)."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        x = dataclasses.asdict(x)
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [plain(v) for v in x]
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    return x
