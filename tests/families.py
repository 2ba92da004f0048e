"""Randomly initialised timm models written in their families' official checkpoint layouts.

Shared by the loading tests (tests/test_checkpoint_families.py) and the distillation tests.
"""

from __future__ import annotations

import argparse

import torch


def randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Perturb every weight (LayerScale gammas start at 1e-5, tokens at 0: too tame to test)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return model.eval()


def dino_checkpoint(teacher, student, teacher_prefix: str, args: bool) -> dict:
    """DINO's ``checkpoint.pth``: both networks with their heads, optimiser, epoch, args."""

    def with_head(model, prefix):
        sd = {f"{prefix}backbone.{k}": v for k, v in model.state_dict().items()}
        sd[f"{prefix}head.mlp.0.weight"] = torch.randn(256, model.embed_dim)
        sd[f"{prefix}head.last_layer.weight_g"] = torch.ones(1024, 1)
        sd[f"{prefix}head.last_layer.weight_v"] = torch.randn(1024, 256)
        return sd

    ckpt = {
        "student": with_head(student, "module."),
        "teacher": with_head(teacher, teacher_prefix),
        "optimizer": {"state": {}, "param_groups": []},
        "epoch": 100,
        "dino_loss": {"center": torch.zeros(1, 1024)},
    }
    if args:
        ckpt["args"] = argparse.Namespace(arch="vit_small", patch_size=16, out_dim=1024)
    return ckpt


def dinov2_official(model) -> dict[str, torch.Tensor]:
    """timm's DINOv2 weights in the official (facebookresearch/dinov2 hub) key layout.

    The inverse of timm's conversion: DINOv2 gives the CLS token a position (``pos_embed[:, 0]``)
    and calls the registers ``register_tokens``; it also ships the iBOT ``mask_token [1, D]``.
    """
    sd = dict(model.state_dict())
    d = model.embed_dim
    sd["mask_token"] = torch.zeros(1, d)
    if "reg_token" in sd:
        cls_pos = torch.randn(1, 1, d, generator=torch.Generator().manual_seed(2))
        sd["register_tokens"] = sd.pop("reg_token")
        sd["cls_token"] = sd["cls_token"] - cls_pos
        sd["pos_embed"] = torch.cat([cls_pos, sd["pos_embed"]], dim=1)
    return sd


# Tiny members of each family (2 blocks, 64 dims) written to a file, for distillation tests.
TINY = dict(depth=2, embed_dim=64, num_heads=1, num_classes=0)  # 64 dims: 1 head is guessable


def write_family(path, family: str, img_size: int) -> torch.nn.Module:
    """Write a tiny randomly initialised ``family`` model to ``path``; returns the model.

    ``dino``: DINO's training checkpoint (teacher/student, no pickled args); ``dinov2``: the
    DINOv2 hub layout with 4 registers and patch 14; ``siglip``: an attention-pooled ViT
    without a CLS token (timm layout, patch 8); ``mae``: the official MAE file, patch 16.
    """
    import timm

    arch, kw = {
        "dino": ("vit_small_patch16_224", dict(patch_size=8)),
        "dinov2": ("vit_small_patch14_reg4_dinov2", {}),
        "siglip": ("vit_base_patch16_siglip_224", dict(patch_size=8)),
        "mae": ("vit_base_patch16_224", {}),
    }[family]
    model = randomised(timm.create_model(arch, img_size=img_size, **TINY, **kw))
    if family == "dino":
        student = randomised(timm.create_model(arch, img_size=img_size, **TINY, **kw))
        torch.save(dino_checkpoint(model, student, "", args=False), path)
    elif family == "dinov2":
        torch.save(dinov2_official(model), path)
    elif family == "mae":
        torch.save({"model": model.state_dict()}, path)
    else:
        torch.save(model.state_dict(), path)
    return model
