"""A resumable ``.npy`` of embeddings, filled block by block in a preallocated file.

For ``--out emb.npy`` the files are:

- ``emb.npy.partial``: the float32 ``[rows, dim]`` array being filled (a valid ``.npy`` whose
  header is written first). Each block of rows is written through a memory map of just that
  block, which is then unmapped, so memory stays flat however large the array.
- ``emb.npy.progress.json``: what the array is of (``key``), its shape and ``rows_done``.
  At most every ``COMMIT_EVERY_S`` seconds, on an exception (Ctrl-C) and at the end the
  array is fsynced and then this file rewritten atomically: rows below ``rows_done`` are
  final, the rest is recomputed by a resumed run (a SIGKILL loses at most that much work).
- when every row is written: ``emb.csv`` (atomic), then ``emb.npy.partial`` renamed to
  ``emb.npy``, then ``emb.json`` (what made it, atomic), then the progress file is removed.
  A run killed between these steps finishes them when re-run; a finished ``emb.npy`` whose
  ``emb.json`` matches the inputs is not recomputed; an ``emb.npy`` made from other inputs
  (or not by moma) is never overwritten without ``overwrite=True``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from moma.errors import ConfigError
from moma.run_folder import atomic_write, atomic_write_text

log = logging.getLogger(__name__)

FORMAT = "moma-embeddings"
DTYPE = np.float32
COMMIT_EVERY_S = 0.5  # fsync + progress file at most this often (each costs ~10 ms on a disk)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _npy(path: Path) -> np.memmap | None:
    """A read-only map of a ``.npy`` (no data read), ``None`` if it is not a float32 2-d array."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    return arr if arr.dtype == DTYPE and arr.ndim == 2 else None


def _write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, default=str))


class EmbeddingStore:
    """The output files of one ``moma embed`` (see the module docstring).

    ``key`` is everything the embeddings depend on (backbone, data fingerprint, options);
    a finished or partial file is reused only when its key is equal.
    """

    def __init__(self, out: str | Path, key: dict, overwrite: bool = False) -> None:
        self.out = Path(out)
        if self.out.suffix != ".npy":
            raise ConfigError(f"--out {self.out}: the embeddings file must end in .npy")
        if self.out.is_dir():
            raise ConfigError(f"--out {self.out}: is a folder; name the .npy file to write")
        self.table = self.out.with_suffix(".csv")
        self.meta = self.out.with_suffix(".json")
        self.partial = self.out.with_name(self.out.name + ".partial")
        self.progress = self.out.with_name(self.out.name + ".progress.json")
        # the key as JSON would read it back (tuples become lists), so comparisons are exact
        self.key = json.loads(json.dumps(key, default=str))
        self.overwrite = overwrite
        self.rows_done = 0  # rows written to the array
        self.unreadable: list[str] = []
        self._committed = -1  # rows_done recorded in the progress file
        self._last_commit = 0.0
        self._shape: tuple[int, int] | None = None
        self._offset = 0

    def is_complete(self) -> bool:
        """Whether ``out`` holds finished embeddings of these inputs (nothing to do)."""
        meta = _read_json(self.meta)
        if meta is None or meta.get("key") != self.key or not self.out.is_file():
            return False
        arr = _npy(self.out)
        return arr is not None and list(arr.shape) == [meta.get("rows"), meta.get("dim")]

    def open(self, rows: int, dim: int) -> int:
        """Prepare to write a ``[rows, dim]`` array; returns the first row still to compute."""
        self._shape = (rows, dim)
        prog = _read_json(self.progress)
        same = prog is not None and prog.get("key") == self.key and prog.get("shape") == [rows, dim]
        if same:
            done = int(prog.get("rows_done", 0))
            part = _npy(self.partial) if self.partial.is_file() else None
            if part is not None and part.shape == (rows, dim):
                self._offset = int(part.offset)
                self.rows_done, self.unreadable = done, list(prog.get("unreadable", []))
                self._committed = done
                log.info("%s: resuming at row %d of %d", self.out, done, rows)
                return done
            whole = _npy(self.out) if self.out.is_file() else None
            if done == rows and whole is not None and whole.shape == (rows, dim):
                # stopped while finishing: the array is complete and already in place
                self.rows_done, self.unreadable = done, list(prog.get("unreadable", []))
                self._committed = done
                return done
        if self.out.exists() and not self.overwrite:
            raise ConfigError(
                f"--out {self.out} exists and holds embeddings of other inputs (or no "
                f"{self.meta.name} says what made it); pass --overwrite true to replace it or "
                "choose another --out"
            )
        self.out.parent.mkdir(parents=True, exist_ok=True)
        arr = np.lib.format.open_memmap(self.partial, mode="w+", dtype=DTYPE, shape=(rows, dim))
        self._offset = int(arr.offset)
        del arr  # the header and the (sparse) file size are on disk
        self.rows_done, self.unreadable = 0, []
        self.commit()
        return 0

    def write(self, start: int, block: np.ndarray, unreadable: list[str] = ()) -> None:
        """Write rows ``start : start + len(block)`` (final once committed; see :meth:`commit`)."""
        if self._shape is None:
            raise RuntimeError("EmbeddingStore.open() first")
        if start != self.rows_done:
            raise RuntimeError(f"rows must be written in order: expected {self.rows_done}")
        n, dim = block.shape
        window = np.memmap(
            self.partial,
            dtype=DTYPE,
            mode="r+",
            offset=self._offset + start * dim * DTYPE().itemsize,
            shape=(n, dim),
        )
        window[:] = block
        del window  # unmapped: the dirty pages are the page cache's, not this process's
        self.rows_done = start + n
        self.unreadable.extend(unreadable)
        if time.monotonic() - self._last_commit >= COMMIT_EVERY_S:
            self.commit()

    def commit(self) -> None:
        """Make the rows written so far durable (fsync), then record them in the progress file."""
        if self._shape is None or self._committed == self.rows_done:
            return
        if self.partial.exists():
            fd = os.open(self.partial, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._save_progress()
        self._committed = self.rows_done
        self._last_commit = time.monotonic()

    def finish(self, write_table: Callable[[Any], None], meta: dict) -> None:
        """Write the CSV and the metadata and put the array in place (in a resumable order)."""
        if self._shape is None or self.rows_done != self._shape[0]:
            raise RuntimeError(f"{self.out}: {self.rows_done} rows written, not all")
        self.commit()
        self.meta.unlink(missing_ok=True)  # an old one must not vouch for the new array
        atomic_write(self.table, write_table)
        if self.partial.exists():
            os.replace(self.partial, self.out)
        rows, dim = self._shape
        _write_json(
            self.meta,
            {
                "format": FORMAT,
                "rows": rows,
                "dim": dim,
                "unreadable": self.unreadable,
                **meta,
                "key": self.key,
            },
        )
        self.progress.unlink(missing_ok=True)

    def _save_progress(self) -> None:
        _write_json(
            self.progress,
            {
                "key": self.key,
                "shape": list(self._shape or ()),
                "rows_done": self.rows_done,
                "unreadable": self.unreadable,
            },
        )
