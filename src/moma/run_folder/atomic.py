"""The one atomic writer of moma: temp file in the same folder, fsync, rename over the target.

A reader never sees a half-written file, and the previous file stays intact until the new one
is complete. Every file moma writes into a run (checkpoints, exports, configs, results, caches,
figures) goes through :func:`atomic_write`, so a full disk reads the same everywhere: one
:class:`~moma.errors.CheckpointError` naming the file, no temp file left behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from moma.errors import CheckpointError

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


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write` of ``text`` (UTF-8)."""
    data = text.encode()
    return atomic_write(path, lambda f: f.write(data))


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
