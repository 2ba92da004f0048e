"""Image files read with PIL: a streaming dataset and a one-pass decode into RAM.

Unreadable files (truncated, corrupt, not an image) are found when they are decoded, not
by a separate scan, so the first epoch starts at once:
- streaming (`ImageFileDataset`): the file is skipped with a warning naming it and the next
  readable image stands in for it; the unreadable files are counted once each across
  DataLoader workers (`num_skipped`), and `SSLDataModule` logs new ones once per epoch;
- in RAM (`decode_to_tensor`): every image is decoded once up front, so every bad file is
  warned about during that pass, followed by a count.
With ``strict=True`` either raises `DataError` naming the file.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from moma.data.image_io import load_rgb
from moma.data.transforms import eval_geometry
from moma.errors import DataError

log = logging.getLogger(__name__)

_MAX_SUBSTITUTES = 50


def _skip_warning(path: str, err: BaseException) -> None:
    warnings.warn(f"skipping unreadable image {path}: {err}", stacklevel=2)


class ImageFileDataset(Dataset):
    """Images decoded from disk on access: items are ``(transform(PIL RGB image), label)``.

    Args:
        files: image paths.
        labels: one int per file (-1 = unlabelled).
        transform: applied to the decoded 8-bit RGB PIL image.
        strict: raise `DataError` on an unreadable file instead of substituting another.

    Subclasses change what an item is by overriding `load` (and `index_of` for samplers
    whose keys are not plain indices); skipping unreadable files stays here.
    """

    def __init__(
        self,
        files: Sequence[str],
        labels: Sequence[int],
        transform: Callable[[Any], Any] | None,
        strict: bool = False,
    ) -> None:
        self.files, self.labels = list(files), list(labels)
        self.transform, self.strict = transform, strict
        # Which files are unreadable, in shared memory: DataLoader workers (fork or spawn)
        # mark the same table, so a bad file is counted (and warned about) once, not once per
        # worker and per epoch, and is not decoded again.
        self._bad = torch.zeros(len(self.files), dtype=torch.bool).share_memory_()

    @property
    def num_skipped(self) -> int:
        """How many distinct unreadable files were skipped so far, all workers included."""
        return int(self._bad.sum())

    def __len__(self) -> int:
        return len(self.files)

    def index_of(self, key: Any) -> int:
        """The file index a sampler's ``key`` names (here the key is the index)."""
        return int(key)

    def load(self, i: int, key: Any) -> Any:
        """The item made from file ``i`` (``key`` as the sampler gave it); raises whatever
        decoding raises for an unreadable file."""
        return self.transform(load_rgb(self.files[i]))

    def __getitem__(self, key: Any) -> tuple[Any, int]:
        index = self.index_of(key)
        n = len(self.files)
        for k in range(min(n, _MAX_SUBSTITUTES)):
            i = (index + k) % n
            if self._bad[i]:
                continue
            try:
                item = self.load(i, key)
            except Exception as err:
                if self.strict:
                    raise DataError(f"{self.files[i]}: unreadable image ({err})") from err
                if not self._bad[i]:  # another worker may have just found it
                    self._bad[i] = True
                    _skip_warning(self.files[i], err)
                continue
            return item, self.labels[i]
        raise DataError(
            f"{self.files[index]}: it and the next {_MAX_SUBSTITUTES - 1} images are unreadable"
        )


class _DecodeDataset(Dataset):
    """Decodes image i to uint8 ``[3, S, S]`` (resize + center crop), or reports the error."""

    def __init__(self, files: Sequence[str], img_size: int) -> None:
        self.files, self.img_size = files, img_size
        self.geometry = eval_geometry(img_size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[int, Tensor | None, str]:
        try:
            img = self.geometry(load_rgb(self.files[index], draft_size=self.img_size))
        except Exception as err:
            return index, None, f"{type(err).__name__}: {err}"
        return index, torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1), ""


def _identity(batch: list) -> list:
    return batch


def decode_to_tensor(
    files: Sequence[str],
    labels: Sequence[int],
    img_size: int,
    strict: bool,
    num_workers: int = 0,
    where: str = "",
) -> tuple[Tensor, Tensor]:
    """Decode all ``files`` once into RAM: uint8 ``[M, 3, S, S]`` and int64 labels ``[M]``.

    Each image is resized (shorter side to ``img_size``) and center-cropped. Unreadable files
    are left out with a warning each and a count at the end (``M < len(files)``).

    Raises:
        DataError: with ``strict``, the first unreadable file; or when none is readable.
    """
    n = len(files)
    log.info(
        "decoding %d images from %s into RAM (%.1f MiB at %d px)",
        n, where, n * 3 * img_size**2 / 2**20, img_size,
    )  # fmt: skip
    images = torch.empty(n, 3, img_size, img_size, dtype=torch.uint8)
    ok = torch.zeros(n, dtype=torch.bool)
    loader = DataLoader(
        _DecodeDataset(files, img_size),
        batch_size=32,
        num_workers=num_workers,
        collate_fn=_identity,
    )
    bad = 0
    for batch in loader:
        for index, img, err in batch:
            if img is not None:
                images[index], ok[index] = img, True
                continue
            if strict:
                raise DataError(f"{files[index]}: unreadable image ({err})")
            bad += 1
            _skip_warning(files[index], RuntimeError(err))
    if bad:
        warnings.warn(f"{where}: skipped {bad} unreadable image(s) of {n}", stacklevel=2)
    if not bool(ok.any()):
        raise DataError(f"{where}: none of the {n} image files could be read")
    keep = ok.nonzero().squeeze(1)
    return images[keep] if bad else images, torch.as_tensor(labels, dtype=torch.int64)[keep]
