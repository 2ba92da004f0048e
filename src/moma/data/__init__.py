"""Datasets and training batches: Fashion-MNIST from IDX files, image folders, the
in-RAM batched augmentation and the Lightning DataModule.

Names are imported lazily, so ``from moma.data.config import DataConfig`` (used by config
dataclasses everywhere) does not import Lightning or torchvision.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from moma.data.batch_augment import BatchAugment
    from moma.data.config import DataConfig
    from moma.data.datamodule import SSLDataModule
    from moma.data.splits import dataset_stats, load_split, num_classes
    from moma.data.tensor_dataset import ImageTensorDataset

_WHERE = {
    "BatchAugment": "moma.data.batch_augment",
    "DataConfig": "moma.data.config",
    "ImageTensorDataset": "moma.data.tensor_dataset",
    "SSLDataModule": "moma.data.datamodule",
    "dataset_stats": "moma.data.splits",
    "load_split": "moma.data.splits",
    "num_classes": "moma.data.splits",
}
__all__ = [
    "BatchAugment",
    "DataConfig",
    "ImageTensorDataset",
    "SSLDataModule",
    "dataset_stats",
    "load_split",
    "num_classes",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'moma.data' has no attribute {name!r}")
