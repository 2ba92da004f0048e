"""Dataset-level entry points: `load_split`, `num_classes`, `dataset_stats`."""

from __future__ import annotations

from torch import Tensor
from torch.utils.data import Dataset

from moma.data import fashion_mnist
from moma.data.config import (
    AUTO_IN_MEMORY_MAX_IMAGES,
    SPLITS,
    DataConfig,
    check_config,
    is_fashion_mnist,
)
from moma.data.file_dataset import ImageFileDataset, decode_to_tensor
from moma.data.folders import FolderSplit, class_names, dataset_dir, scan_split
from moma.data.idx import read_idx
from moma.data.shards import is_shard_spec
from moma.data.tensor_dataset import ImageTensorDataset
from moma.data.transforms import eval_transform
from moma.errors import ConfigError, DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def dataset_stats(cfg: DataConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel ``(mean, std)`` used to normalise images (3 values each).

    Fashion-MNIST: its own statistics on the zero-padded 32 px training images
    (0.2190 / 0.3318, the same for the 3 channels), or on the unpadded ones (0.2860 / 0.3530)
    at its native ``img_size=28``; image folders: ImageNet's.
    """
    if is_fashion_mnist(cfg):
        if native_fashion_mnist(cfg):
            return (fashion_mnist.NATIVE_MEAN,) * 3, (fashion_mnist.NATIVE_STD,) * 3
        return (fashion_mnist.MEAN,) * 3, (fashion_mnist.STD,) * 3
    return IMAGENET_MEAN, IMAGENET_STD


def num_classes(cfg: DataConfig) -> int:
    """Number of classes: 10 for Fashion-MNIST, the class sub-folders of an image folder's
    training split, 0 for a flat folder of unlabelled images."""
    if is_fashion_mnist(cfg):
        return fashion_mnist.NUM_CLASSES
    return len(class_names(dataset_dir(cfg.dataset)))


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {list(SPLITS)}, got {split!r}")


def use_in_memory(cfg: DataConfig, num_images: int) -> bool:
    """``cfg.in_memory``, or when it is None: whether an image folder is small enough."""
    if cfg.in_memory is not None:
        return bool(cfg.in_memory)
    return num_images <= AUTO_IN_MEMORY_MAX_IMAGES


def native_fashion_mnist(cfg: DataConfig) -> bool:
    """Whether Fashion-MNIST is used at its own 28 px, unpadded (``img_size=28``)."""
    return is_fashion_mnist(cfg) and int(cfg.img_size) == fashion_mnist.NATIVE_SIZE


def fashion_mnist_split(cfg: DataConfig, split: str) -> tuple[Tensor, Tensor]:
    """Fashion-MNIST ``split`` as uint8 ``[N, 1, 32, 32]`` (``[N, 1, 28, 28]`` at the native
    ``img_size=28``) and labels, ``subset`` applied."""
    root = fashion_mnist.find_root(cfg.root)
    images, labels = fashion_mnist.load(root, split, pad=not native_fashion_mnist(cfg))
    if split == "train" and cfg.subset is not None:
        images, labels = images[: cfg.subset], labels[: cfg.subset]
    return images, labels


def count_train_images(cfg: DataConfig) -> int | None:
    """How many training images ``cfg`` has (``subset`` applied), without decoding images;
    ``None`` for tar shards (they are counted by reading them)."""
    if is_fashion_mnist(cfg):
        root = fashion_mnist.find_root(cfg.root)
        path = fashion_mnist.find_file(root, fashion_mnist.split_files("train")[1])
        if path is None:
            raise DataError(f"{root}: Fashion-MNIST training labels not found")
        n = len(read_idx(path))  # the labels file: no image is decoded
    elif is_shard_spec(cfg.dataset):
        return None
    else:
        n = len(scan_split(cfg.dataset, "train").files)
    return min(n, int(cfg.subset)) if cfg.subset is not None else n


def folder_split(cfg: DataConfig, split: str) -> FolderSplit:
    """The files and labels of an image folder's ``split``, ``subset`` applied to train."""
    listing = scan_split(cfg.dataset, split)
    if split == "train" and cfg.subset is not None:
        listing.files = listing.files[: cfg.subset]
        listing.labels = listing.labels[: cfg.subset]
    return listing


def load_split(cfg: DataConfig, split: str) -> Dataset:
    """A split for evaluation: items ``(float [3, S, S] normalised, int label)``.

    Deterministic: resize (shorter side to ``img_size``) + center crop + normalise.
    ``split`` is ``train``, ``val`` or ``test``; Fashion-MNIST has train and test (``val``
    means test); an image folder needs ``train/`` and ``val/`` (or ``test/``) sub-folders
    for the held-out split (``test`` falls back to ``val`` and back). ``subset`` applies to
    ``train`` only.

    Fashion-MNIST, and folders kept in RAM (see ``DataConfig.in_memory``), give an
    `ImageTensorDataset` with ``.images`` (uint8), ``.labels`` and a batched ``.transform``;
    larger folders an `ImageFileDataset` decoding files on access.

    Raises:
        DataError: missing/empty folder, no images, unreadable files in strict mode, ...
    """
    check_config(cfg)
    _check_split(split)
    if is_shard_spec(cfg.dataset):
        raise DataError(
            f"data.dataset {cfg.dataset!r}: tar shards are for training; evaluate on an image "
            "folder (train/ and val/) or fashion_mnist"
        )
    mean, std = dataset_stats(cfg)
    if is_fashion_mnist(cfg):
        images, labels = fashion_mnist_split(cfg, split)
        return ImageTensorDataset(images, labels, cfg.img_size, mean, std)
    listing = folder_split(cfg, split)
    if use_in_memory(cfg, len(listing.files)):
        images, labels = decode_to_tensor(
            listing.files,
            listing.labels,
            cfg.img_size,
            cfg.strict,
            cfg.num_workers,
            where=str(listing.root),
        )
        return ImageTensorDataset(images, labels, cfg.img_size, mean, std)
    transform = eval_transform(cfg.img_size, mean, std)
    return ImageFileDataset(listing.files, listing.labels, transform, cfg.strict)
