"""What a dataset split *is*, as a short digest: caches key on it, never on a path.

Two folders at the same path can hold different images (files moved between classes,
deleted, replaced); a cache keyed by the path would then serve stale results. The
fingerprint of a split covers what determines its images and labels:

- an image folder: every selected file's path relative to the dataset root, its label, size
  and modification time (``st_mtime_ns``), in the split's (sorted) order, ``subset`` applied;
- Fashion-MNIST: the split's two IDX files' names, sizes and mtimes, plus ``subset``.

Sizes and mtimes change whenever a file is rewritten in the usual ways (copy, save, move
between classes, delete); content hashes would also catch a rewrite that restores both, at
the cost of reading every image. Caches that need that guarantee check digests of their
own bytes on read.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from moma.data import fashion_mnist
from moma.data.config import DataConfig, is_fashion_mnist
from moma.data.splits import folder_split
from moma.errors import DataError
from moma.integrity import content_digest


def files_fingerprint(root: Path, files: list[str], labels: list[int] | None = None) -> str:
    """sha256 over ``(relative path, label, size, mtime_ns)`` of each file, in order.

    Raises ``OSError`` for a file that cannot be stat'ed (it vanished after the listing).
    """
    h = hashlib.sha256()
    labels = labels if labels is not None else [-1] * len(files)
    for path, label in zip(files, labels, strict=True):
        st = os.stat(path)
        rel = os.path.relpath(path, root)
        h.update(f"{rel}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def split_fingerprint(cfg: DataConfig, split: str) -> str:
    """The fingerprint of ``split`` of ``cfg``'s dataset (``subset`` applied to train)."""
    if is_fashion_mnist(cfg):
        root = fashion_mnist.find_root(cfg.root)
        stems = fashion_mnist.split_files(split)
        found = [fashion_mnist.find_file(root, s) for s in stems]
        if None in found:
            raise DataError(f"{root}: Fashion-MNIST {split} files {list(stems)} not all found")
        files = [str(f) for f in found]
        subset = cfg.subset if split == "train" else None
        return files_fingerprint(root, files) + f":fashion_mnist:{split}:{subset}"

    listing = folder_split(cfg, split)
    return files_fingerprint(listing.root, listing.files, listing.labels)


def dataset_fingerprint(data: object) -> str | None:
    """The fingerprint of a dataset object given instead of a config (Python API).

    In-memory tensors (a ``TensorDataset``, an ``ImageTensorDataset``) are digested by
    content (with the image size and normalisation they are served at); files (an
    ``ImageFileDataset``) as in :func:`files_fingerprint`. ``None`` for anything else: such
    data cannot be identified, so nothing computed from it may be cached.
    """
    tensors = getattr(data, "tensors", None)
    if isinstance(tensors, tuple):  # torch.utils.data.TensorDataset
        return "tensors:" + content_digest(list(tensors))
    images, labels = getattr(data, "images", None), getattr(data, "labels", None)
    if images is not None and labels is not None and hasattr(images, "dtype"):
        serving = [getattr(data, k, None) for k in ("img_size", "mean", "std")]
        return "images:" + content_digest([images, labels, serving])
    files = getattr(data, "files", None)
    if isinstance(files, list) and isinstance(labels, list):
        return "files:" + files_fingerprint(Path("/"), files, labels)
    return None
