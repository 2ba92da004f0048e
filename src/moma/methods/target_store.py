"""On-disk store of one teacher's targets on ``K`` views of ``N`` images (memory-mapped).

A store is a folder:

- ``meta.json``: the key that determines the targets (teacher sha256, data fingerprint, view
  recipe, precision, dtype, ...), the shapes, and the chunking; written once, atomically;
- ``<kind>.bin``: one raw array per target kind, image-major so a chunk of images is one
  contiguous byte range: ``cls.bin`` ``[N, K, D]``, ``patch.bin`` ``[N, K, L, D]``;
- ``chunks/<c>.sha256``: the sha256 of chunk ``c``'s bytes (all kinds), written atomically
  once the chunk is on disk. A chunk without it was never finished (a kill during the
  build): it is computed again, and everything finished before is kept.

Opening checks the key, the file sizes and every chunk's digest, so a truncated, foreign or
bit-flipped store is never used: it is reported in one line and rebuilt (the bad chunks
only, when the files themselves are sound). Under DDP each rank writes its own chunks
(``c % world == rank``) into the same files; they must live on a filesystem every rank sees.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from moma.run_folder import atomic_write_text

log = logging.getLogger(__name__)

STORE_FORMAT = 1
# numpy has no bfloat16: its bytes are stored as uint16 and viewed back in torch.
_NUMPY_DTYPES = {"float16": np.float16, "bfloat16": np.uint16, "float32": np.float32}
_TORCH_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
DTYPES = tuple(_NUMPY_DTYPES)


@dataclass(frozen=True)
class StoreLayout:
    """Shapes of a store: ``num_images`` x ``views``, one trailing shape per kind."""

    num_images: int
    views: int
    kinds: dict[str, tuple[int, ...]]  # "cls" -> (D,), "patch" -> (L, D)
    dtype: str
    chunk_images: int

    @property
    def num_chunks(self) -> int:
        return -(-self.num_images // self.chunk_images)

    def chunk_range(self, c: int) -> tuple[int, int]:
        """Images ``[a, b)`` of chunk ``c``."""
        a = c * self.chunk_images
        return a, min(self.num_images, a + self.chunk_images)

    def shape(self, kind: str) -> tuple[int, ...]:
        return (self.num_images, self.views, *self.kinds[kind])

    def nbytes(self, kind: str) -> int:
        return int(np.prod(self.shape(kind))) * np.dtype(_NUMPY_DTYPES[self.dtype]).itemsize


def key_digest(key: dict) -> str:
    """The sha256 of a key's canonical JSON (the store's folder name uses its start)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


class TargetStore:
    """One teacher's cached targets; create with :meth:`create`, reopen with :meth:`open`."""

    def __init__(self, folder: Path, key: dict, layout: StoreLayout) -> None:
        self.folder, self.key, self.layout = Path(folder), key, layout
        self._maps: dict[str, np.memmap] = {}

    # ----------------------------------------------------------------- creating, opening
    @classmethod
    def create(cls, folder: Path, key: dict, layout: StoreLayout, info: dict) -> TargetStore:
        """A new, empty store (preallocated files, no finished chunk); replaces ``folder``."""
        folder = Path(folder)
        if folder.exists():
            shutil.rmtree(folder)
        (folder / "chunks").mkdir(parents=True)
        store = cls(folder, key, layout)
        for kind in layout.kinds:
            with open(store._bin(kind), "wb") as f:
                f.truncate(layout.nbytes(kind))  # sparse until written
        meta = {
            "format": STORE_FORMAT,
            "key": key,
            "key_sha256": key_digest(key),
            "num_images": layout.num_images,
            "views": layout.views,
            "kinds": {k: list(v) for k, v in layout.kinds.items()},
            "dtype": layout.dtype,
            "chunk_images": layout.chunk_images,
            **info,
        }
        atomic_write_text(folder / "meta.json", json.dumps(meta, indent=1))
        return store

    @classmethod
    def open(cls, folder: Path, key: dict, layout: StoreLayout) -> tuple[TargetStore | None, str]:
        """The store at ``folder`` if its key and layout are ``key`` and ``layout`` and its
        files have the right sizes: ``(store, "")``; else ``(None, why it cannot be used)``.

        Chunks are not verified here (see :meth:`verify`).
        """
        folder = Path(folder)
        meta_path = folder / "meta.json"
        if not meta_path.exists():
            return None, "no meta.json (never created, or its creation was interrupted)"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as e:
            return None, f"unreadable meta.json ({e})"
        if meta.get("format") != STORE_FORMAT:
            return None, f"store format {meta.get('format')}, this moma writes {STORE_FORMAT}"
        if meta.get("key") != key:
            changed = sorted(k for k in set(key) | set(meta.get("key") or {})
                             if (meta.get("key") or {}).get(k) != key.get(k))  # fmt: skip
            return None, f"made for another teacher/data/recipe (differs in {changed})"
        saved = (
            meta.get("num_images"),
            meta.get("views"),
            {k: tuple(v) for k, v in (meta.get("kinds") or {}).items()},
            meta.get("dtype"),
            meta.get("chunk_images"),
        )
        want = (layout.num_images, layout.views, layout.kinds, layout.dtype, layout.chunk_images)
        if saved != want:
            return None, f"layout {saved} differs from the expected {want}"
        store = cls(folder, key, layout)
        for kind in layout.kinds:
            path = store._bin(kind)
            size = path.stat().st_size if path.exists() else -1
            if size != layout.nbytes(kind):
                return (
                    None,
                    f"{path.name} has {size} bytes, expected {layout.nbytes(kind)} (truncated?)",
                )
        return store, ""

    # ----------------------------------------------------------------- chunks
    def _bin(self, kind: str) -> Path:
        return self.folder / f"{kind}.bin"

    def _digest_path(self, c: int) -> Path:
        return self.folder / "chunks" / f"{c:06d}.sha256"

    def _map(self, kind: str, mode: str = "r") -> np.memmap:
        if mode != "r":
            return np.memmap(
                self._bin(kind),
                _NUMPY_DTYPES[self.layout.dtype],
                mode,
                shape=self.layout.shape(kind),
            )
        if kind not in self._maps:
            self._maps[kind] = np.memmap(
                self._bin(kind),
                _NUMPY_DTYPES[self.layout.dtype],
                "r",
                shape=self.layout.shape(kind),
            )
        return self._maps[kind]

    def _chunk_digest(self, c: int) -> str:
        a, b = self.layout.chunk_range(c)
        h = hashlib.sha256()
        for kind in sorted(self.layout.kinds):
            h.update(memoryview(np.ascontiguousarray(self._map(kind)[a:b])).cast("B"))
        return h.hexdigest()

    def finished_chunks(self) -> set[int]:
        """Chunks whose digest file exists (written after their bytes reached the disk)."""
        return {c for c in range(self.layout.num_chunks) if self._digest_path(c).exists()}

    def write_chunk(self, c: int, arrays: dict[str, Tensor]) -> None:
        """Write chunk ``c`` (``arrays[kind]``: ``[b - a, K, *shape]``), flush, then its digest."""
        a, b = self.layout.chunk_range(c)
        for kind, arr in arrays.items():
            mm = self._map(kind, mode="r+")
            t = arr.detach().to("cpu", _TORCH_DTYPES[self.layout.dtype]).contiguous()
            data = t.view(torch.uint16) if self.layout.dtype == "bfloat16" else t
            mm[a:b] = data.numpy()
            mm.flush()
            del mm
        self._maps.clear()  # readers re-map after writes
        digest = self._chunk_digest(c)
        atomic_write_text(self._digest_path(c), digest)

    def verify(self, chunks: list[int] | None = None) -> list[int]:
        """Chunks (of ``chunks``, default all finished ones) whose bytes no longer match their
        digest; their digest files are removed, so they count as unfinished."""
        bad = []
        for c in sorted(self.finished_chunks() if chunks is None else chunks):
            try:
                saved = self._digest_path(c).read_text().strip()
            except OSError:
                continue
            if saved != self._chunk_digest(c):
                bad.append(c)
                self._digest_path(c).unlink(missing_ok=True)
        return bad

    # ----------------------------------------------------------------- reading
    def lookup(self, index: np.ndarray, view: np.ndarray) -> dict[str, Tensor]:
        """Targets of images ``index [B]`` on views ``view [B]``: kind -> ``[B, *shape]`` (CPU)."""
        out = {}
        for kind in self.layout.kinds:
            rows = np.ascontiguousarray(self._map(kind)[index, view])  # [B, *shape]
            t = torch.from_numpy(rows)
            out[kind] = t.view(torch.bfloat16) if self.layout.dtype == "bfloat16" else t
        return out


def free_bytes(folder: Path) -> int:
    """Free bytes on the filesystem holding ``folder`` (or its nearest existing parent)."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free
