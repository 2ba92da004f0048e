"""In-RAM datasets built on a uint8 image tensor."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from moma.data.batch_augment import normalize, resize_square, to_rgb, to_unit_float


class ImageTensorDataset(Dataset):
    """Evaluation dataset held in RAM: items are ``(float [3, S, S] normalised, int label)``.

    ``images`` (uint8 ``[N, C, h, w]``, C = 1 or 3) and ``labels`` (int64 ``[N]``) are public:
    batched feature extraction can slice them and call `transform` on whole batches, which
    gives exactly what indexing gives, much faster. ``__getitems__`` makes a plain DataLoader
    transform each batch at once too.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        img_size: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or len(images) != len(labels):
            raise ValueError(
                f"expected uint8 images [N, C, H, W] and N labels, "
                f"got {images.dtype} {list(images.shape)} and {len(labels)} labels"
            )
        self.images, self.labels = images, labels.to(torch.int64)
        self.img_size, self.mean, self.std = img_size, tuple(mean), tuple(std)

    def transform(self, images: Tensor) -> Tensor:
        """uint8 ``[B, C, h, w]`` (any device) -> normalised float ``[B, 3, S, S]``."""
        x = resize_square(to_unit_float(images), self.img_size)
        return normalize(to_rgb(x), self.mean, self.std)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.transform(self.images[index : index + 1])[0], int(self.labels[index])

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Tensor, int]]:
        idx = torch.as_tensor(indices, dtype=torch.int64)
        imgs = self.transform(self.images[idx])
        return list(zip(imgs.unbind(0), self.labels[idx].tolist()))


class TensorPILDataset(Dataset):
    """uint8 images in RAM, each turned into a PIL RGB image and sent through a per-image
    transform (the slow, classic path; used when ``in_memory=False`` for Fashion-MNIST)."""

    def __init__(self, images: Tensor, labels: Tensor, transform: Callable[[Image.Image], Any]):
        self.images, self.labels, self.transform = images, labels.to(torch.int64), transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        arr = np.ascontiguousarray(self.images[index].permute(1, 2, 0).numpy())  # [h, w, C]
        img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).convert("RGB")
        return self.transform(img), int(self.labels[index])
