"""A content digest stored inside training checkpoints, so silent corruption is detected.

``torch.load`` checks a file's zip structure, not its tensor bytes: a bit flip inside a
tensor loads without complaint. :class:`~moma.train.checkpoint_io.AtomicCheckpointIO` stores the
SHA-256 of a checkpoint's content (every tensor's dtype, shape and bytes, every number and
string, in order) under :data:`DIGEST_KEY`; readers recompute it and refuse a mismatch.
Objects that are neither tensors, containers nor plain values (e.g. config dataclasses in
``hyper_parameters``) contribute their type name only, so a digest never depends on memory
addresses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from moma.errors import CheckpointError

DIGEST_KEY = "moma_digest"


def content_digest(obj: Any) -> str:
    """Hex SHA-256 of ``obj``'s content (``DIGEST_KEY`` at the top level excluded)."""
    h = hashlib.sha256()
    if isinstance(obj, Mapping):
        obj = {k: v for k, v in obj.items() if k != DIGEST_KEY}
    _feed(h, obj)
    return h.hexdigest()


def _feed(h, x: Any) -> None:
    if torch.is_tensor(x):
        t = x.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(x, Mapping):
        h.update(f"D{len(x)}:".encode())
        for k, v in x.items():
            _feed(h, k)
            _feed(h, v)
    elif isinstance(x, list | tuple):
        h.update(f"L{len(x)}:".encode())
        for v in x:
            _feed(h, v)
    elif x is None or isinstance(x, bool | int | float | str | bytes):
        h.update(f"{type(x).__name__}={x!r};".encode())
    else:
        h.update(f"O{type(x).__module__}.{type(x).__qualname__};".encode())


def with_digest(checkpoint: dict) -> dict:
    """``checkpoint`` plus its digest (a shallow copy; the caller's dict is not changed)."""
    out = dict(checkpoint)
    out[DIGEST_KEY] = {"algorithm": "sha256", "value": content_digest(checkpoint)}
    return out


def verify_digest(checkpoint: Any, path: str | Path) -> None:
    """Raise :class:`CheckpointError` if ``checkpoint`` carries a digest that does not match.

    Files without a digest (other tools' files, older moma checkpoints) pass unchecked.
    """
    record = checkpoint.get(DIGEST_KEY) if isinstance(checkpoint, Mapping) else None
    if record is None:
        return
    want = record.get("value") if isinstance(record, Mapping) else None
    if not isinstance(want, str) or content_digest(checkpoint) != want:
        raise CheckpointError(
            f"{path}: corrupt checkpoint: its content does not match the sha256 digest stored "
            "in it (damaged on disk or in transfer); use an intact copy or delete it to start over"
        )
