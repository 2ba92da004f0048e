"""Find the images of an image-folder dataset and their labels.

Layouts (``base`` is ``cfg.dataset``):
- ``base/<class>/**/<image>``: ImageFolder, labels are the sorted class names' indices;
- ``base/<image>``: a flat folder of unlabelled images, label -1;
- either layout inside ``base/train`` and ``base/val`` (or ``base/test``): splits. The
  ``val``/``test`` splits use the class indices of ``train``.
A folder without ``train/`` is all training data; asking it for ``val``/``test`` is an error.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from moma.data.image_io import IMAGE_EXTENSIONS, is_image_file
from moma.errors import DataError

_EXTS = ", ".join(sorted(IMAGE_EXTENSIONS))


@dataclass
class FolderSplit:
    """The image files of one split, in a deterministic (sorted) order."""

    root: Path
    files: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)  # -1 = unlabelled
    classes: list[str] = field(default_factory=list)  # empty for a flat folder


def dataset_dir(dataset: str) -> Path:
    """``cfg.dataset`` as an existing folder (raises `DataError` otherwise)."""
    path = Path(dataset).expanduser()
    if not path.exists():
        raise DataError(
            f"dataset {dataset!r}: no such folder (use 'fashion_mnist' or a path to image folders)"
        )
    if not path.is_dir():
        raise DataError(f"dataset {path}: not a folder (expected a folder of images)")
    return path


def split_dir(base: Path, split: str) -> Path:
    """The folder holding ``split``: ``base`` itself, or ``base/train``, ``base/val|test``."""
    subs = {name: base / name for name in ("train", "val", "test") if (base / name).is_dir()}
    if "train" not in subs:
        if split == "train":
            return base
        raise DataError(
            f"{base}: no train/ and val/ sub-folders, so there is no {split!r} split "
            f"(put the training images in {base}/train and the held-out ones in {base}/val)"
        )
    if split == "train":
        return subs["train"]
    order = ("test", "val") if split == "test" else ("val", "test")
    for name in order:
        if name in subs:
            return subs[name]
    raise DataError(f"{base}: has train/ but no val/ (or test/) sub-folder for the {split!r} split")


def _images_under(folder: str) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(os.path.join(dirpath, f) for f in sorted(filenames) if is_image_file(f))
    return found


def _visible_entries(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as err:
        raise DataError(f"{folder}: cannot list folder ({err.strerror or err})") from err


def _scan(folder: Path, classes: list[str] | None) -> FolderSplit:
    entries = _visible_entries(folder)
    if not entries:
        raise DataError(f"{folder}: folder is empty")
    top_images = [e.path for e in entries if is_image_file(e.name) and e.is_file()]
    per_class = {e.name: _images_under(e.path) for e in entries if e.is_dir()}
    per_class = {name: files for name, files in per_class.items() if files}
    split = FolderSplit(root=folder)
    if per_class:
        if top_images:
            warnings.warn(
                f"{folder}: {len(top_images)} image(s) outside the class sub-folders are ignored",
                stacklevel=3,
            )
        if classes:  # val/test: the training split's class indices
            unknown = sorted(set(per_class) - set(classes))
            if unknown:
                raise DataError(
                    f"{folder}: class folder(s) {unknown} are not in the training split"
                )
        split.classes = list(classes) if classes else sorted(per_class)
        index = {name: i for i, name in enumerate(split.classes)}
        for name, files in per_class.items():
            split.files.extend(files)
            split.labels.extend([index[name]] * len(files))
    elif top_images:
        split.files, split.labels = top_images, [-1] * len(top_images)
    else:
        raise DataError(f"{folder}: no image files found (looked for {_EXTS})")
    return split


def _has_image(folder: str) -> bool:
    for _, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if any(is_image_file(f) for f in filenames):
            return True
    return False


def class_names(base: Path) -> list[str]:
    """Class names of the training split (empty for a flat folder of unlabelled images).

    Only looks for one image per class folder, so it is cheap on large datasets.
    """
    folder = split_dir(base, "train")
    entries = _visible_entries(folder)
    if not entries:
        raise DataError(f"{folder}: folder is empty")
    return sorted(e.name for e in entries if e.is_dir() and _has_image(e.path))


def scan_split(dataset: str, split: str) -> FolderSplit:
    """List the images and labels of ``split`` (``train``, ``val`` or ``test``).

    Raises:
        DataError: missing path, empty folder, no image files, missing split folder.
    """
    base = dataset_dir(dataset)
    folder = split_dir(base, split)
    classes = None if folder == base or split == "train" else class_names(base)
    return _scan(folder, classes)
