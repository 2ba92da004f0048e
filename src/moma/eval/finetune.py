"""Full fine-tuning with layer-wise lr decay, drop path, mixup/cutmix and label smoothing.

A plain PyTorch loop (no Lightning): AdamW, per-step warm-up + cosine schedule, bf16
autocast when asked. The caller's backbone is deep-copied first and never changed.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from timm.data import Mixup
from timm.layers import DropPath
from timm.loss import SoftTargetCrossEntropy
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from moma.errors import ConfigError, TrainingError
from moma.eval.config import FinetuneConfig
from moma.eval.features import autocast_context, default_device, iterate_batches

log = logging.getLogger(__name__)


@dataclass
class FinetuneResult:
    """Test top-1 (percent), steps taken and the training loss per step."""

    top1: float
    steps: int
    images: int
    losses: list[float] = field(default_factory=list)


def set_drop_path(model: VisionTransformer, rate: float) -> None:
    """Stochastic depth rising linearly from 0 (first block) to ``rate`` (last block)."""
    depth = len(model.blocks)
    for i, blk in enumerate(model.blocks):
        r = rate * i / max(1, depth - 1)
        blk.drop_path1 = DropPath(r) if r > 0 else nn.Identity()
        blk.drop_path2 = DropPath(r) if r > 0 else nn.Identity()


def prepare_classifier(
    backbone: VisionTransformer, num_classes: int, features: str = "mean", drop_path: float = 0.0
) -> VisionTransformer:
    """A deep copy of ``backbone`` with a fresh linear head (std 2e-5, as MAE) and drop path.

    ``features="cls"`` classifies the final-norm CLS token, ``"mean"`` the mean of the
    final-norm patch tokens.
    """
    if not isinstance(backbone, VisionTransformer):
        raise ConfigError("fine-tuning needs a ViT backbone (not a raw-pixel baseline)")
    model = copy.deepcopy(backbone)
    model.reset_classifier(num_classes, global_pool="token" if features == "cls" else "avg")
    nn.init.trunc_normal_(model.head.weight, std=2e-5)
    nn.init.zeros_(model.head.bias)
    set_drop_path(model, drop_path)
    return model


STEM_PREFIXES = ("cls_token", "reg_token", "dist_token", "pos_embed", "patch_embed", "norm_pre")


def layer_id(name: str, num_layers: int) -> int:
    """Layer of a ViT parameter for lr decay (MAE's ``get_layer_id_for_vit``).

    Embeddings and tokens 0, ``blocks.j`` -> ``j + 1``, everything after the blocks (final
    norm, fc_norm, head) ``num_layers`` (= depth + 1).
    """
    if name.startswith(STEM_PREFIXES):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_layers


def layer_decay_param_groups(
    model: VisionTransformer, lr: float, weight_decay: float, layer_decay: float
) -> list[dict]:
    """AdamW parameter groups with layer-wise lr decay (MAE/BEiT convention).

    With ``num_layers = depth + 1`` and :func:`layer_id`, a parameter's group has
    ``lr = lr * layer_decay ** (num_layers - layer_id)`` (head and final norm at full lr,
    embeddings at ``layer_decay ** num_layers``). Biases, norm weights and the
    ``no_weight_decay()`` tokens get no weight decay. Each group also records
    ``lr_scale`` and ``layer_id``.
    """
    num_layers = len(model.blocks) + 1
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lid = layer_id(name, num_layers)
        no_wd = p.ndim <= 1 or name in skip
        g = groups.get((lid, no_wd))
        if g is None:
            scale = layer_decay ** (num_layers - lid)
            g = groups[(lid, no_wd)] = {
                "params": [],
                "lr": lr * scale,
                "lr_scale": scale,
                "layer_id": lid,
                "weight_decay": 0.0 if no_wd else weight_decay,
            }
        g["params"].append(p)
    return [groups[key] for key in sorted(groups)]


def _train_batch_size(data: Any, batch_size: int) -> int:
    """The training batch: at most the dataset size, even (mixup pairs samples), >= 2."""
    n = len(data)
    bs = min(batch_size, n)
    bs -= bs % 2
    if bs < 2:
        raise ConfigError(f"fine-tuning needs at least 2 training images, got {n}")
    return bs


@torch.no_grad()
def evaluate_classifier(
    model: nn.Module, data, batch_size: int, precision: str, device: torch.device
) -> float:
    """Top-1 accuracy (percent) of a classifier on a dataset."""
    model.eval()
    correct = total = 0
    with torch.inference_mode(), autocast_context(device, precision):
        for x, y in iterate_batches(data, batch_size, device):
            pred = model(x).argmax(dim=1).cpu()
            correct += int((pred == y.long()).sum())
            total += len(y)
    return 100.0 * correct / max(1, total)


def finetune_eval(
    backbone: VisionTransformer,
    train_data,
    test_data,
    num_classes: int,
    cfg: FinetuneConfig | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
) -> FinetuneResult:
    """Fine-tune a copy of ``backbone`` on ``train_data`` and report top-1 on ``test_data``."""
    cfg = cfg or FinetuneConfig()
    dev = default_device(device)
    np_state = np.random.get_state()  # timm's Mixup draws from numpy's global RNG
    np.random.seed(seed)
    try:
        return _finetune(backbone, train_data, test_data, num_classes, cfg, dev, seed)
    finally:
        np.random.set_state(np_state)


def _finetune(
    backbone: VisionTransformer,
    train_data: Any,
    test_data: Any,
    num_classes: int,
    cfg: FinetuneConfig,
    dev: torch.device,
    seed: int,
) -> FinetuneResult:
    """The training loop of :func:`finetune_eval` (torch RNG forked and seeded)."""
    with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        model = prepare_classifier(backbone, num_classes, cfg.features, cfg.drop_path).to(dev)
        bs = _train_batch_size(train_data, cfg.batch_size)
        gen = torch.Generator().manual_seed(seed)
        steps_per_epoch = len(train_data) // bs
        total = steps_per_epoch * cfg.epochs
        if cfg.max_steps is not None:
            total = min(total, cfg.max_steps)
        warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
        lr = cfg.lr * bs / 256
        groups = layer_decay_param_groups(model, lr, cfg.weight_decay, cfg.layer_decay)
        opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))
        min_ratio = cfg.min_lr / lr if lr > 0 else 0.0

        def factor(step: int) -> float:
            if warmup > 0 and step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        use_mix = cfg.mixup > 0 or cfg.cutmix > 0
        mixer = (
            Mixup(
                mixup_alpha=cfg.mixup,
                cutmix_alpha=cfg.cutmix,
                label_smoothing=cfg.label_smoothing,
                num_classes=num_classes,
            )
            if use_mix
            else None
        )
        soft_loss = SoftTargetCrossEntropy()
        hard_loss = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        losses: list[float] = []
        step = 0
        model.train()
        while step < total:
            batches = iterate_batches(
                train_data, bs, dev, shuffle=True, drop_last=True, generator=gen
            )
            for x, y in batches:
                if step >= total:
                    break
                y = y.to(dev, non_blocking=True)
                if cfg.hflip:
                    flip = torch.rand(len(x), device=dev) < 0.5
                    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
                with autocast_context(dev, cfg.precision):
                    if mixer is not None:
                        x, target = mixer(x, y)
                        loss = soft_loss(model(x).float(), target)
                    else:
                        loss = hard_loss(model(x).float(), y)
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"fine-tuning loss is {float(loss)} at step {step}; lower the lr"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                sched.step()
                losses.append(float(loss.detach()))
                step += 1
                if step % 50 == 0:
                    log.info("finetune step %d/%d loss %.4f", step, total, losses[-1])
        top1 = evaluate_classifier(model, test_data, cfg.eval_batch_size, cfg.precision, dev)
    return FinetuneResult(top1=top1, steps=step, images=step * bs, losses=losses)
