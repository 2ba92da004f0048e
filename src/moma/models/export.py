"""Export a backbone as ``.safetensors`` (timm key names) plus a JSON sidecar with its config.

The pair loads back with :func:`moma.models.checkpoint.load_backbone` (format ``moma``) and with
plain timm, without moma installed::

    import json, timm
    meta = json.load(open("backbone.json"))
    model = timm.create_model(
        meta["arch"],
        pretrained=True,
        pretrained_cfg_overlay=dict(file="backbone.safetensors"),
        **meta["timm_kwargs"],
    )

``timm_kwargs`` must keep ``num_classes=0``: with timm's default 1000 classes the model has a
``head`` and the strict load fails on the missing ``head.weight`` / ``head.bias``. With it, every
backbone key is loaded (none missing, none unexpected). The weights file alone also works with
``timm.create_model(..., pretrained_cfg_overlay=dict(file=...), num_classes=0, <sizes>)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from moma.errors import CheckpointError
from moma.models.checkpoint_arch import base_arch, mlp_ratio_for
from moma.models.checkpoint_formats import FORMAT_VERSION, MOMA_EXPORT_FORMAT
from moma.models.vit import describe
from moma.run_folder import atomic_write

log = logging.getLogger(__name__)


def backbone_timm_kwargs(model: VisionTransformer) -> dict[str, Any]:
    """``timm.create_model`` keyword arguments that rebuild ``model``'s architecture exactly.

    Every structural option is written out, so the result does not depend on the defaults of
    the base arch name it is combined with.
    """
    d = describe(model)
    blk = model.blocks[0]
    ls = getattr(blk, "ls1", None)
    kw: dict[str, Any] = {
        "img_size": d["img_size"],
        "patch_size": d["patch_size"],
        "in_chans": d["in_chans"],
        "depth": d["depth"],
        "embed_dim": d["embed_dim"],
        "num_heads": d["num_heads"],
        "mlp_ratio": mlp_ratio_for(int(blk.mlp.fc1.out_features), d["embed_dim"]),
        "num_classes": 0,
        "global_pool": d["global_pool"],
        "class_token": bool(model.has_class_token),
        "reg_tokens": int(model.num_reg_tokens),
        "no_embed_class": bool(model.no_embed_class),
        "qkv_bias": blk.attn.qkv.bias is not None,
        "qk_norm": not isinstance(getattr(blk.attn, "q_norm", nn.Identity()), nn.Identity),
        "init_values": 1e-5 if ls is not None and not isinstance(ls, nn.Identity) else None,
        "pre_norm": not isinstance(model.norm_pre, nn.Identity),
        "fc_norm": not isinstance(model.fc_norm, nn.Identity),
        "final_norm": not (
            isinstance(model.norm, nn.Identity) and isinstance(model.fc_norm, nn.Identity)
        ),
    }
    if model.pos_embed is None:
        kw["pos_embed"] = "none"
    return kw


def export_backbone(
    model: VisionTransformer,
    path: str | Path,
    arch: str | None = None,
    extra: dict | None = None,
) -> Path:
    """Write ``model``'s backbone to ``path`` (``.safetensors``) and its config to ``path.with_suffix(".json")``.

    The weights are the model's state dict without ``head.*`` (timm key names, contiguous CPU
    tensors, dtype kept). The sidecar is ``{"format": "moma-backbone", "format_version": 1,
    "arch": arch, "timm_kwargs": {...}, "sha256": <of the .safetensors>, **extra}``; the same JSON
    is stored in the safetensors header (key ``moma``) so the weights file alone still loads with
    :func:`~moma.models.checkpoint.load_backbone`. Both files are written atomically. ``arch``
    names the timm base architecture (default: the one of the model's width,
    :func:`~moma.models.checkpoint_arch.base_arch`); ``timm_kwargs`` override all of its sizes.
    Returns ``path``.
    See the module docstring for the exact ``timm.create_model`` call that loads the export.
    """
    import safetensors.torch

    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: an export must be a .safetensors file")
    if not isinstance(model, VisionTransformer):
        raise CheckpointError(
            f"{path}: can only export a timm VisionTransformer, got {type(model).__name__}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)

    tensors: dict[str, torch.Tensor] = {}
    dropped = []
    for k, v in model.state_dict().items():
        if k.startswith("head."):
            dropped.append(k)
            continue
        tensors[k] = v.detach().to("cpu").contiguous().clone()
    if dropped:
        log.info("%s: not exporting the classifier head (%s)", path, ", ".join(dropped))

    meta: dict[str, Any] = {
        "format": MOMA_EXPORT_FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": arch or base_arch(model.embed_dim),
        "timm_kwargs": backbone_timm_kwargs(model),
    }
    header = dict(meta)
    data = safetensors.torch.save(tensors, metadata={"format": "pt", "moma": json.dumps(header)})
    meta["sha256"] = hashlib.sha256(data).hexdigest()
    if extra:
        clash = sorted(set(extra) & set(meta))
        if clash:
            raise CheckpointError(f"{path}: extra metadata may not replace {', '.join(clash)}")
        meta.update(extra)
    try:
        sidecar = (json.dumps(meta, indent=2) + "\n").encode()
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: extra metadata is not JSON-serialisable: {e}") from None
    atomic_write(path, lambda f: f.write(data))  # weights first: a sidecar never describes
    atomic_write(path.with_suffix(".json"), lambda f: f.write(sidecar))  # missing weights
    log.info(
        "exported backbone to %s (+ %s), sha256 %s",
        path,
        path.with_suffix(".json").name,
        meta["sha256"][:12],
    )
    return path
