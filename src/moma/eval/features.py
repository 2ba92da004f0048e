"""Frozen-backbone feature extraction: the global feature (CLS, or the model's pooled feature
when it has no CLS token) or mean-pooled patch tokens after the final norm.

:func:`iter_features` yields them batch by batch (``moma embed`` streams them to disk);
:func:`extract_features` collects them in RAM (kNN, linear probe, report).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from moma.errors import ConfigError
from moma.models.attention import attention_kernel
from moma.models.vit import global_feature

log = logging.getLogger(__name__)

FEATURES = ("cls", "mean")
PRECISIONS = ("bf16", "32")


def default_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` for ``precision="bf16"``, a no-op for ``"32"``."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _in_ram(data: Any) -> tuple[Tensor, Tensor, Callable | None] | None:
    """``(images, labels, batch transform)`` of an in-RAM dataset, else ``None``.

    Two layouts are sliced directly: ``moma.data.ImageTensorDataset`` (uint8 ``images`` plus a
    ``transform`` that maps a whole uint8 batch to normalised floats) and any dataset whose
    ``images`` are already float and that has no ``transform``.
    """
    images, labels = getattr(data, "images", None), getattr(data, "labels", None)
    if not (isinstance(images, Tensor) and isinstance(labels, Tensor)):
        return None
    if len(images) != len(labels):
        return None
    transform = getattr(data, "transform", None)
    if images.dtype == torch.uint8 and callable(transform):
        return images, labels, transform
    if images.is_floating_point() and transform is None:
        return images, labels, None
    return None


def iterate_batches(
    data: Dataset | DataLoader | Iterable,
    batch_size: int,
    device: str | torch.device | None = None,
    shuffle: bool = False,
    drop_last: bool = False,
    generator: torch.Generator | None = None,
    start: int = 0,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(images float [B,3,H,W] on device, labels int64 [B] on the CPU)``.

    In-RAM datasets (see :func:`_in_ram`) are sliced and their batch transform runs on the
    device; a ``DataLoader`` is used as given; other datasets go through a ``DataLoader``
    (``num_workers=0``) with ``shuffle``/``drop_last``/``generator``. ``start`` skips the
    first items of an unshuffled dataset (a resumed ``moma embed``).
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if start and (shuffle or isinstance(data, DataLoader) or not isinstance(data, Dataset)):
        raise ValueError("start= needs an unshuffled Dataset, not a DataLoader or an iterable")
    ram = _in_ram(data)
    if ram is not None:
        images, labels, transform = ram
        n = len(images)
        order = torch.randperm(n, generator=generator) if shuffle else None
        stop = n - n % batch_size if drop_last else n
        for i in range(start, stop, batch_size):
            idx = order[i : i + batch_size] if order is not None else slice(i, i + batch_size)
            x = images[idx].to(dev, non_blocking=True)
            yield (transform(x) if transform is not None else x), labels[idx].long()
        return
    if isinstance(data, DataLoader):
        loader: Iterable = data
    elif isinstance(data, Dataset):
        if start:
            data = Subset(data, range(start, len(data)))
        loader = DataLoader(
            data,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            generator=generator,
            num_workers=0,
        )
    else:
        loader = data
    for batch in loader:
        x, y = batch[0], batch[1]
        yield x.to(dev, non_blocking=True), torch.as_tensor(y).long().cpu()


def pool_tokens(model: nn.Module, x: Tensor, features: str) -> Tensor:
    """Features of a batch: ``[B, D]``.

    For a timm ViT, ``cls`` is its global feature (:func:`moma.models.vit.global_feature`: the
    final-norm CLS token, or the model's own pooled feature when it has no CLS token, e.g. a
    SigLIP-style attention pool) and ``mean`` the mean of the final-norm patch tokens. Any
    other module (e.g. :class:`RawPixels`) is called and its output flattened; ``features`` is
    then ignored.
    """
    if isinstance(model, VisionTransformer):
        tokens = model.forward_features(x)  # [B, P + L, D]
        if features == "cls":
            return global_feature(model, tokens)  # [B, D]
        return tokens[:, model.num_prefix_tokens :].mean(dim=1)
    return model(x).flatten(1)


def iter_features(
    model: nn.Module,
    dataset_or_loader: Dataset | DataLoader | Iterable,
    features: str = "cls",
    batch_size: int = 512,
    precision: str = "bf16",
    device: str | torch.device | None = None,
    start: int = 0,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Run a frozen backbone over a dataset batch by batch: ``(feats float32 [B, D], labels [B])``.

    The model is put in ``eval()`` under ``torch.inference_mode`` (its previous train/eval
    mode is restored when the generator finishes or is closed) and moved to ``device``; its
    weights are never changed. Features are yielded on the CPU. ``start`` skips the first
    items of a dataset (see :func:`iterate_batches`).
    """
    if features not in FEATURES:
        raise ConfigError(f"features must be one of {FEATURES}, got {features!r}")
    dev = default_device(device)
    was_training = model.training
    model.to(dev).eval()
    try:
        # attention_kernel: the device's faster attention path (moma.models.attention)
        with torch.inference_mode(), autocast_context(dev, precision), attention_kernel(model, dev):
            for x, y in iterate_batches(dataset_or_loader, batch_size, dev, start=start):
                yield pool_tokens(model, x, features).float().cpu(), y  # [B, D], [B]
    finally:
        model.train(was_training)


def extract_features(
    model: nn.Module,
    dataset_or_loader: Dataset | DataLoader | Iterable,
    features: str = "cls",
    batch_size: int = 512,
    precision: str = "bf16",
    device: str | torch.device | None = None,
) -> tuple[Tensor, Tensor]:
    """Run a frozen backbone over a dataset: ``(feats float32 [N, D], labels int64 [N])``.

    Collects :func:`iter_features` (same model handling) in RAM; features are on the CPU.
    """
    feats: list[Tensor] = []
    labels: list[Tensor] = []
    for f, y in iter_features(model, dataset_or_loader, features, batch_size, precision, device):
        feats.append(f)
        labels.append(y)
    if not feats:
        raise ConfigError("cannot extract features from an empty dataset")
    out_f, out_y = torch.cat(feats), torch.cat(labels)
    log.debug("extracted %s features %s", features, tuple(out_f.shape))
    return out_f, out_y
