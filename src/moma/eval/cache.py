"""On-disk cache of extracted features, keyed by everything that determines them.

The key holds the backbone's identity (its file's sha256, or a baseline's config), the
*content* fingerprint of each split (``moma.data.fingerprint``: relative paths, labels, sizes
and mtimes of its files, or the bytes of in-memory tensors), the image size, ``features``
and ``precision``: editing the dataset in place (moving images between classes, deleting
some) is a miss, never a stale hit. Each file also stores a sha256 of its tensors, checked on
every read: a damaged entry is recomputed with a warning, never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

import moma.eval.features as eval_features  # an attribute: tests replace extract_features
from moma.errors import CheckpointError
from moma.integrity import DIGEST_KEY, verify_digest, with_digest
from moma.run_folder import atomic_write

log = logging.getLogger(__name__)


def cache_key(**parts) -> str:
    """A sha256 hex digest of the JSON of ``parts`` (backbone identity, dataset, split, ...)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def save_features(path: Path, feats: Tensor, labels: Tensor, meta: dict) -> None:
    """Write ``{feats, labels, meta}`` and their sha256 atomically (temp file + rename)."""
    blob = with_digest({"feats": feats.contiguous(), "labels": labels, "meta": meta})
    atomic_write(path, lambda f: torch.save(blob, f))


def load_features(path: Path) -> tuple[Tensor, Tensor] | None:
    """Read a cache file (``weights_only``), its digest verified; ``None`` when it is missing,
    unreadable, damaged (digest mismatch) or has no digest (it cannot be trusted)."""
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if DIGEST_KEY not in blob:
            raise CheckpointError(f"{path}: no digest (written by an older moma)")
        verify_digest(blob, path)
        return blob["feats"], blob["labels"]
    except Exception as exc:  # a damaged cache entry is recomputed, never fatal nor used
        log.warning("ignoring the damaged feature cache entry %s (recomputing): %s", path, exc)
        return None


def read_cache_meta(path: Path) -> dict | None:
    """The key parts a cache file was stored under (its tensors are memory-mapped, not read);
    ``None`` when the file is unreadable. Lets a reader find entries without the key."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        meta = blob["meta"]
    except Exception:  # a corrupt or foreign file is simply not an entry
        return None
    return meta if isinstance(meta, dict) else None


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


def split_features(
    model,
    splits: dict[str, object],
    *,
    features: str,
    batch_size: int,
    precision: str,
    device=None,
    cache_dir: Path | None = None,
    cache_parts: dict | None = None,
) -> tuple[dict[str, tuple[Tensor, Tensor]], int]:
    """Frozen features of every split (``{"train": data, "test": data}``), cached on disk.

    kNN and the linear probe share this, so evaluating one backbone with both extracts its
    features once. ``cache_parts`` identifies the backbone and data (the split, ``features``
    and ``precision`` are added; a ``{split: fingerprint}`` mapping under ``"data"`` keys each
    split by its own data); without it, or without ``cache_dir``, nothing is cached.
    Returns ``({split: (feats [N, D], labels [N])}, cache hits)``.
    """

    use_cache = cache_dir is not None and cache_parts is not None
    out: dict[str, tuple[Tensor, Tensor]] = {}
    hits = 0
    for split, data in splits.items():
        parts = {
            **(cache_parts or {}),
            "split": split,
            "features": features,
            "precision": precision,
        }
        if isinstance(parts.get("data"), dict):  # one split's edit leaves the other's entry
            parts["data"] = parts["data"].get(split)
        feats, labels, hit = cached_features(
            cache_dir if use_cache else None,
            parts,
            lambda data=data: eval_features.extract_features(
                model, data, features=features, batch_size=batch_size, precision=precision,
                device=device,
            ),
        )  # fmt: skip
        hits += int(hit)
        out[split] = (feats, labels)
    return out, hits
