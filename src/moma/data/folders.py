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


class _Walk:
    """One scan of a split folder, safe against link cycles.

    Folder links are followed, but every real folder is entered once: a link to a folder
    already scanned, to the split folder itself or to one of its parents (``up -> ..``) is a
    cycle that would repeat images (or walk the whole disk); it is skipped with a warning.
    Entries that cannot be stat'ed (a link to itself, a dangling link) and image-named
    entries that are not regular files (a FIFO would block the reader) are skipped with a
    warning too, so the listing only holds files a reader can open.
    """

    def __init__(self, top: Path) -> None:
        self.top = os.path.realpath(top)
        self.seen = {self.top}

    def enter(self, path: str) -> bool:
        """Whether to scan the folder ``path`` (False, with a warning, for a cycle)."""
        real = os.path.realpath(path)
        if real in self.seen or os.path.commonpath([real, self.top]) == real:
            warnings.warn(
                f"{path}: skipped: it leads to {real}, the data folder, one of its parents or "
                "a folder already scanned (following it would repeat images or leave the data)",
                stacklevel=4,
            )
            return False
        self.seen.add(real)
        return True

    def entries(self, folder: str, hidden: bool) -> list[tuple[str, str, str]]:
        """``(name, path, kind)`` of ``folder``'s entries, sorted by name, links followed;
        kind is ``dir``, ``file`` (a regular file) or ``other`` (a FIFO, a device, ...)."""
        out = []
        for entry in _visible_entries(Path(folder), hidden):
            try:  # the scandir type: a stat call only for links
                kind = "dir" if entry.is_dir() else "file" if entry.is_file() else "other"
                if kind == "other" and entry.is_symlink():
                    os.stat(entry.path)  # raises for a dangling link
            except OSError as err:  # a link to itself, a dangling link, no permission
                warnings.warn(f"{entry.path}: skipped: {err.strerror or err}", stacklevel=4)
                continue
            out.append((entry.name, entry.path, kind))
        return out

    def images(self, folder: str, first_only: bool = False) -> list[str]:
        """Image files under ``folder`` (recursively; its files first, then its sub-folders
        in name order, hidden sub-folders skipped); ``first_only`` stops at the first."""
        entries = self.entries(folder, hidden=True)
        found = image_files(entries)
        if first_only and found:
            return found[:1]
        dirs = [p for n, p, k in entries if k == "dir" and not n.startswith(".")]
        for path in dirs:
            if self.enter(path):
                found.extend(self.images(path, first_only))
                if first_only and found:
                    return found
        return found


def image_files(entries: list[tuple[str, str, str]]) -> list[str]:
    """The image-named regular files among ``(name, path, kind)`` entries; an image name on
    something else (a FIFO, a device) is skipped with a warning."""
    found = []
    for name, path, kind in entries:
        if is_image_file(name) and kind != "dir":
            if kind == "file":
                found.append(path)
            else:
                warnings.warn(f"{path}: skipped: not a regular file", stacklevel=4)
    return found


def _visible_entries(folder: Path, hidden: bool = False) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted(
                (e for e in it if hidden or not e.name.startswith(".")), key=lambda e: e.name
            )
    except OSError as err:
        raise DataError(f"{folder}: cannot list folder ({err.strerror or err})") from err


def _scan(folder: Path, classes: list[str] | None) -> FolderSplit:
    if not _visible_entries(folder):
        raise DataError(f"{folder}: folder is empty")
    walk = _Walk(folder)
    entries = walk.entries(str(folder), hidden=False)
    top_images = image_files(entries)
    per_class = {n: walk.images(p) for n, p, k in entries if k == "dir" and walk.enter(p)}
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


def class_names(base: Path) -> list[str]:
    """Class names of the training split (empty for a flat folder of unlabelled images).

    Only looks for one image per class folder, so it is cheap on large datasets.
    """
    folder = split_dir(base, "train")
    if not _visible_entries(folder):
        raise DataError(f"{folder}: folder is empty")
    walk = _Walk(folder)
    return sorted(
        n
        for n, p, k in walk.entries(str(folder), hidden=False)
        if k == "dir" and walk.enter(p) and walk.images(p, first_only=True)
    )


def scan_split(dataset: str, split: str) -> FolderSplit:
    """List the images and labels of ``split`` (``train``, ``val`` or ``test``).

    Raises:
        DataError: missing path, empty folder, no image files, missing split folder.
    """
    base = dataset_dir(dataset)
    folder = split_dir(base, split)
    classes = None if folder == base or split == "train" else class_names(base)
    return _scan(folder, classes)
