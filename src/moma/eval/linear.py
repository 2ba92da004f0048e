"""Linear probe on frozen features: BatchNorm1d(affine=False) + Linear (MAE protocol).

Features are extracted once (and cached on disk by the caller's key); the probe trains on
them with SGD + momentum, warm-up and cosine decay (see :class:`LinearConfig`). The
backbone is only run under ``torch.inference_mode`` and is never changed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from moma.eval.cache import split_features
from moma.eval.config import LinearConfig

log = logging.getLogger(__name__)


@dataclass
class LinearResult:
    """Test top-1 (percent) after the last epoch, train top-1, and the loss per epoch."""

    top1: float
    train_top1: float
    losses: list[float] = field(default_factory=list)
    cache_hits: int = 0


def build_probe(dim: int, num_classes: int) -> nn.Sequential:
    """``BatchNorm1d(dim, affine=False)`` then ``Linear(dim, num_classes)`` (weights std 0.01)."""
    head = nn.Linear(dim, num_classes)
    nn.init.trunc_normal_(head.weight, std=0.01)
    nn.init.zeros_(head.bias)
    return nn.Sequential(nn.BatchNorm1d(dim, affine=False, eps=1e-6), head)


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """lr factor: linear warm-up over ``warmup`` steps, then cosine from 1 to 0 at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def _accuracy(probe: nn.Module, feats: Tensor, labels: Tensor, batch: int = 4096) -> float:
    probe.eval()
    correct = 0
    for i in range(0, len(feats), batch):
        correct += int((probe(feats[i : i + batch]).argmax(1) == labels[i : i + batch]).sum())
    return 100.0 * correct / max(1, len(feats))


def train_linear_probe(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    num_classes: int | None = None,
    cfg: LinearConfig | None = None,
    seed: int = 0,
) -> LinearResult:
    """Train the probe on ``[N, D]`` features and report top-1 on the test features."""
    cfg = cfg or LinearConfig()
    train_feats, test_feats = train_feats.float().clone(), test_feats.float().clone()
    train_labels, test_labels = train_labels.long().clone(), test_labels.long().clone()
    c = int(num_classes or int(torch.cat([train_labels, test_labels]).max()) + 1)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe = build_probe(train_feats.shape[1], c)
    n = len(train_feats)
    bs = max(1, min(cfg.train_batch_size, n))
    steps_per_epoch = max(1, n // bs)
    total = steps_per_epoch * cfg.epochs
    lr = cfg.lr * bs / 256
    opt = torch.optim.SGD(
        probe.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    warmup = min(cfg.warmup_epochs * steps_per_epoch, total // 5)  # short runs: <= 20%
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total, warmup))
    loss_fn = nn.CrossEntropyLoss()
    losses: list[float] = []
    for epoch in range(cfg.epochs):
        probe.train()
        perm = torch.randperm(n, generator=gen)
        total_loss = 0.0
        for s in range(steps_per_epoch):
            idx = perm[s * bs : (s + 1) * bs]
            loss = loss_fn(probe(train_feats[idx]), train_labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += float(loss.detach())
        losses.append(total_loss / steps_per_epoch)
        log.debug("linear probe epoch %d loss %.4f", epoch, losses[-1])
    return LinearResult(
        top1=_accuracy(probe, test_feats, test_labels),
        train_top1=_accuracy(probe, train_feats, train_labels),
        losses=losses,
    )


def linear_eval(
    model: nn.Module,
    train_data,
    test_data,
    cfg: LinearConfig | None = None,
    num_classes: int | None = None,
    device: str | torch.device | None = None,
    cache_dir: Path | None = None,
    cache_parts: dict | None = None,
    seed: int = 0,
) -> LinearResult:
    """Extract (or read cached) frozen features of both splits and train the probe.

    Args:
        cache_dir: feature cache folder (``None`` = no cache).
        cache_parts: what identifies the backbone and data (backbone sha256 or baseline
            config, dataset, image size); the split, ``features`` and ``precision`` are
            added here. Without it nothing is cached.
    """
    cfg = cfg or LinearConfig()
    splits, hits = split_features(
        model, {"train": train_data, "test": test_data}, features=cfg.features,
        batch_size=cfg.batch_size, precision=cfg.precision, device=device,
        cache_dir=cache_dir if cfg.use_cache else None, cache_parts=cache_parts,
    )  # fmt: skip
    result = train_linear_probe(*splits["train"], *splits["test"], num_classes, cfg, seed)
    result.cache_hits = hits
    return result
