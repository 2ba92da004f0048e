"""Options of the evaluation protocols, as dataclasses the CLI exposes (``--knn.k`` ...).

Nothing here imports torch, so building the CLI parser stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Features = Literal["cls", "mean"]
Precision = Literal["bf16", "32"]


@dataclass
class KnnConfig:
    """Weighted cosine kNN (docs/DESIGN.md, section 4): train split = bank, test split = queries.

    Attributes:
        k: neighbour counts to report (one result per k); a k larger than the bank is
            clamped to the bank size with a warning.
        temperature: votes are weighted by ``exp(sim / temperature)``.
        features: ``cls`` (final-norm CLS token) or ``mean`` (mean of final-norm patch tokens).
        batch_size: images per forward pass during feature extraction.
        precision: ``bf16`` autocast or full ``32``-bit forwards.
        query_chunk: queries scored at once (memory ~ query_chunk x bank_chunk x 8 bytes).
        bank_chunk: bank rows scored at once; ``None`` = the whole bank.
        cache_dir: feature cache folder shared with the linear probe; ``None`` =
            ``<out_dir>/cache/features``.
        use_cache: read/write the feature cache.
        sim_dtype: ``float64`` computes similarities in double precision and rounds them to
            float32, which makes the result independent of the chunk sizes; ``float32`` is
            faster but may differ in the last bit between chunkings.
    """

    k: list[int] = field(default_factory=lambda: [20, 200])
    temperature: float = 0.07
    features: Features = "cls"
    batch_size: int = 512
    precision: Precision = "bf16"
    query_chunk: int = 1024
    bank_chunk: int | None = None
    sim_dtype: Literal["float64", "float32"] = "float64"
    cache_dir: str | None = None
    use_cache: bool = True


@dataclass
class LinearConfig:
    """Linear probe on frozen features: BatchNorm1d(affine=False) + Linear (MAE protocol).

    Optimiser: SGD with momentum 0.9 (MAE uses LARS at batch 16384; at the small batches
    used here plain SGD on batch-normalised features trains the same probe), no weight
    decay by default, linear warm-up then cosine decay, ``lr = lr * batch_size / 256``.
    Features are extracted once per (backbone, dataset, split, features, image size,
    precision) and cached under ``cache_dir``.

    Attributes:
        features: ``cls`` or ``mean`` (see :class:`KnnConfig`).
        batch_size: images per forward pass during feature extraction.
        precision: ``bf16`` or ``32`` for the feature extraction.
        epochs: passes over the cached training features.
        train_batch_size: feature vectors per SGD step.
        lr: base learning rate per 256 samples.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        warmup_epochs: linear warm-up length (at most 20% of the run).
        cache_dir: feature cache folder; ``None`` = ``<out_dir>/cache/features``.
        use_cache: read and write the feature cache.
    """

    features: Features = "cls"
    batch_size: int = 512
    precision: Precision = "bf16"
    epochs: int = 50
    train_batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    warmup_epochs: int = 5
    cache_dir: str | None = None
    use_cache: bool = True


@dataclass
class FinetuneConfig:
    """Full fine-tuning (MAE/BEiT recipe, shortened).

    AdamW (0.9, 0.999), ``lr = lr * batch_size / 256`` with layer-wise decay
    (parameter group of layer ``i`` gets ``lr * layer_decay ** (num_layers - i)``, with
    patch/pos embeddings at layer 0, block ``j`` at layer ``j + 1`` and the final norm and
    head at ``num_layers = depth + 1``), linear warm-up then cosine decay per step, drop
    path rising linearly over the blocks, random horizontal flips, mixup/cutmix with
    label smoothing (timm ``Mixup`` + ``SoftTargetCrossEntropy``).

    Attributes:
        features: ``cls`` (classify the CLS token) or ``mean`` (global average pool).
        batch_size: training batch (even: mixup pairs samples).
        eval_batch_size: batch for the test-set evaluation.
        precision: ``bf16`` autocast or ``32``.
        epochs: passes over the training split.
        max_steps: stop after this many optimiser steps (``None`` = all epochs).
        lr: base learning rate per 256 samples.
        min_lr: floor of the cosine schedule.
        weight_decay: AdamW weight decay (not on biases, norms, tokens).
        layer_decay: layer-wise lr decay factor.
        drop_path: stochastic depth rate of the last block.
        warmup_epochs: linear warm-up length (fractions allowed).
        mixup: mixup alpha (0 = off).
        cutmix: cutmix alpha (0 = off).
        label_smoothing: label smoothing.
        hflip: random horizontal flips.
        grad_clip: clip the gradient norm to this (``None`` = off).
    """

    features: Features = "mean"
    batch_size: int = 128
    eval_batch_size: int = 512
    precision: Precision = "bf16"
    epochs: int = 10
    max_steps: int | None = None
    lr: float = 1e-3
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    layer_decay: float = 0.75
    drop_path: float = 0.1
    warmup_epochs: float = 1.0
    mixup: float = 0.8
    cutmix: float = 1.0
    label_smoothing: float = 0.1
    hflip: bool = True
    grad_clip: float | None = None
