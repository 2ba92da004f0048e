"""Atomic file writes: temp file in the same folder, fsync, rename over the target."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from moma.errors import CheckpointError
from moma.models.integrity import with_digest

_TEMP_SUFFIX = ".tmp"
# ".<target name>.<mkstemp's 8 random characters>.tmp"
_TEMP_NAME = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp")


def atomic_write(path: str | Path, write: Callable[[Any], None]) -> Path:
    """Call ``write(file_object)`` on a temp file, fsync it, then rename it to ``path``.

    A reader never sees a half-written file and the previous file stays intact until the
    new one is complete. On failure (disk full included) the temp file is removed and a
    :class:`CheckpointError` names the target.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    existed = path.exists()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TEMP_SUFFIX, dir=path.parent)
    out: _WriteRecorder | None = None
    try:
        with os.fdopen(fd, "wb") as f:
            out = _WriteRecorder(f)
            write(out)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        # torch.save may replace a write's OSError (disk full) by its own RuntimeError
        err = e if isinstance(e, OSError) else (out.error if out is not None else None)
        if err is None:
            raise
        why = "disk full" if err.errno == errno.ENOSPC else err.strerror or str(err)
        kept = "the previous file is intact" if existed else "nothing was written"
        raise CheckpointError(f"could not write {path}: {why}; {kept}") from e
    return path


class _WriteRecorder:
    """A file proxy that remembers the OSError a ``write`` raised (and raises it on)."""

    def __init__(self, f) -> None:
        self._f = f
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = e
            raise

    def __getattr__(self, name: str):
        return getattr(self._f, name)


def stale_temp_files(folder: str | Path) -> list[Path]:
    """Temp files :func:`atomic_write` left in ``folder`` when its process was killed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(".*.tmp") if _TEMP_NAME.fullmatch(p.name) and p.is_file())


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temp files a killed writer left in ``folder``; call it only under the run lock.

    Returns the files removed. A complete file is never a temp file, so nothing is lost.
    """
    removed = []
    for p in stale_temp_files(folder):
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p)
    return removed


def _fsync_dir(folder: Path) -> None:
    # Make the rename itself durable (POSIX); harmless where unsupported.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O whose saves are atomic (Lightning writes in place)."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        """Write ``checkpoint`` plus its content digest (checked on every read) atomically."""
        checkpoint = with_digest(checkpoint)
        atomic_write(path, lambda f: torch.save(checkpoint, f))
