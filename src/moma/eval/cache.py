"""On-disk cache of extracted features, keyed by everything that determines them."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

log = logging.getLogger(__name__)


def cache_key(**parts) -> str:
    """A sha256 hex digest of the JSON of ``parts`` (backbone identity, dataset, split, ...)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def save_features(path: Path, feats: Tensor, labels: Tensor, meta: dict) -> None:
    """Write ``{feats, labels, meta}`` atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save({"feats": feats.contiguous(), "labels": labels, "meta": meta}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_features(path: Path) -> tuple[Tensor, Tensor] | None:
    """Read a cache file (``weights_only``); ``None`` when it is missing or unreadable."""
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        return blob["feats"], blob["labels"]
    except Exception as exc:  # a corrupt cache entry is recomputed, never fatal
        log.warning("ignoring unreadable feature cache %s: %s", path, exc)
        return None


def cached_features(
    cache_dir: Path | None,
    key_parts: dict,
    compute: Callable[[], tuple[Tensor, Tensor]],
) -> tuple[Tensor, Tensor, bool]:
    """Features from the cache, or computed and stored: ``(feats, labels, hit)``.

    ``cache_dir=None`` disables the cache.
    """
    if cache_dir is None:
        feats, labels = compute()
        return feats, labels, False
    path = Path(cache_dir) / f"{cache_key(**key_parts)}.pt"
    hit = load_features(path)
    if hit is not None:
        log.info("feature cache hit %s", path.name)
        return hit[0], hit[1], True
    feats, labels = compute()
    save_features(path, feats, labels, key_parts)
    log.info("feature cache stored %s %s", path.name, tuple(feats.shape))
    return feats, labels, False
