"""Fashion-MNIST from its IDX files: find them, read them, pad 28 -> 32 px (or keep 28).

Search order for the files (``cfg.root`` overrides it): the Debian package folder
``/usr/share/datasets/fashion-mnist`` (``apt-get install dataset-fashion-mnist``), then
``~/.cache/moma/fashion-mnist`` (also its torchvision layout ``FashionMNIST/raw``), then a
download into that cache folder from torchvision's mirror, checked against its md5 sums.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.request
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from moma.data.idx import read_idx
from moma.errors import DataError

log = logging.getLogger(__name__)

DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
NUM_CLASSES = 10
CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
# Mean and std of the 60000 training images after zero-padding 28 -> 32 px, in [0, 1]
# (the unpadded images have 0.2860 / 0.3530). Computed once with `padded_stats`; a test
# checks them against the files.
MEAN = 0.2190
STD = 0.3318
PAD = 2  # 28 + 2 * 2 = 32
# At the native 28 px (``img_size=28``) the images are not padded: a patch-4 grid is 7x7 and
# every patch holds image content (at 32 px 28 of the 64 patches are half padding). Stats of
# the unpadded training images, checked by the same test.
NATIVE_SIZE = 28
NATIVE_MEAN = 0.2860
NATIVE_STD = 0.3530
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_DOWNLOAD_TIMEOUT_S = 30


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/moma/fashion-mnist`` (default ``~/.cache/moma/fashion-mnist``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "moma" / "fashion-mnist"


def find_file(folder: Path, stem: str) -> Path | None:
    """The file ``stem`` (``.gz`` or not) in ``folder`` or its torchvision layout, if any."""
    for sub in (folder, folder / "FashionMNIST" / "raw"):
        for suffix in (".gz", ""):
            path = sub / f"{stem}{suffix}"
            if path.is_file():
                return path
    return None


def split_files(split: str) -> tuple[str, str]:
    """The stems of a split's image and label files (``val`` means ``test``)."""
    return _FILES["train" if split == "train" else "test"]


def _has_all(folder: Path) -> bool:
    return all(find_file(folder, stem) for pair in _FILES.values() for stem in pair)


def find_root(root: str | None) -> Path:
    """The folder holding the Fashion-MNIST files (see the module docstring for the order).

    Raises:
        DataError: ``root`` is given but missing, or no copy is found nor downloadable.
    """
    if root is not None:
        path = Path(root).expanduser()
        if not path.is_dir():
            raise DataError(f"Fashion-MNIST root {path}: no such folder")
        return path
    for candidate in (DEBIAN_ROOT, cache_root()):
        if _has_all(candidate):
            return candidate
    cache = cache_root()
    try:
        _download(cache)
    except (OSError, ValueError) as err:
        raise DataError(
            f"Fashion-MNIST not found in {DEBIAN_ROOT} or {cache} and the download failed "
            f"({err}): run `apt-get install dataset-fashion-mnist`, or put the four "
            f"*-ubyte.gz files in a folder and set data.root to it"
        ) from err
    return cache


def _download(folder: Path) -> None:
    """Fetch the four ``.gz`` files from torchvision's mirror, md5-checked, atomically."""
    from torchvision.datasets import FashionMNIST

    folder.mkdir(parents=True, exist_ok=True)
    mirror = FashionMNIST.mirrors[0]
    for filename, md5 in FashionMNIST.resources:
        target = folder / filename
        if target.is_file():
            continue
        log.info("downloading %s%s to %s", mirror, filename, folder)
        with urllib.request.urlopen(mirror + filename, timeout=_DOWNLOAD_TIMEOUT_S) as response:
            payload = response.read()
        if hashlib.md5(payload).hexdigest() != md5:
            raise ValueError(f"md5 mismatch for downloaded {filename}")
        tmp = target.with_name(target.name + ".part")
        tmp.write_bytes(payload)
        tmp.replace(target)


def load(root: Path, split: str, pad: bool = True) -> tuple[Tensor, Tensor]:
    """Read one split: images uint8 ``[N, 1, 32, 32]`` (zero-padded; ``[N, 1, 28, 28]`` with
    ``pad=False``), labels int64 ``[N]``.

    Args:
        root: folder from `find_root`.
        split: ``"train"`` or ``"test"`` (``"val"`` means ``"test"``: there is no other).
        pad: zero-pad 28 -> 32 px (``PAD`` on each side).

    Raises:
        DataError: a file is missing, corrupt or truncated, or images and labels disagree.
    """
    pair = split_files(split)
    paths = []
    for stem in pair:
        path = find_file(root, stem)
        if path is None:
            raise DataError(f"{root}: Fashion-MNIST file {stem}.gz not found")
        paths.append(path)
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise DataError(f"{paths[0]}: expected uint8 images [N, 28, 28], got {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(
            f"{paths[1]}: {labels.shape[0]} labels for {len(images)} images in {paths[0]}"
        )
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        raise DataError(f"{paths[1]}: label {int(labels.max())} out of range 0..9")
    log.debug("read %d Fashion-MNIST %s images from %s", len(images), split, root)
    labels_t = torch.from_numpy(labels.astype(np.int64))
    if not pad:
        return torch.from_numpy(images[:, None].copy()), labels_t  # own, writable memory
    padded = np.zeros((len(images), 1, 28 + 2 * PAD, 28 + 2 * PAD), dtype=np.uint8)
    padded[:, 0, PAD:-PAD, PAD:-PAD] = images
    return torch.from_numpy(padded), labels_t


def padded_stats(images: Tensor) -> tuple[float, float]:
    """Mean and std in [0, 1] of uint8 images (how `MEAN` and `STD` were computed)."""
    x = images.to(torch.float64) / 255.0
    return float(x.mean()), float(x.std())
