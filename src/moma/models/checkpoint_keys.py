"""Pick the backbone out of a checkpoint of each format, in timm key names.

MAE, MoCo v3 and timm files are unwrapped (``model`` / ``state_dict`` / ``module.`` /
``module.base_encoder.``), DINO / DINOv2 training checkpoints give their ``teacher``'s
``backbone.``, OpenCLIP files their image tower ``visual.trunk.``, moma files are read through
their export metadata or ``moma`` entry, and pre-training heads are dropped
(:func:`extract_backbone_state_dict`). DINOv2's own key layout (``register_tokens``, chunked
``blocks.C.N.``) is renamed to timm's in every format (:func:`dinov2_to_timm`). Re-exported by
:mod:`moma.models.checkpoint`.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from moma.errors import CheckpointError
from moma.models.checkpoint_formats import (
    FORMAT_VERSION,
    FORMATS,
    METHOD_PREFIXES,
    OPEN_CLIP_TRUNK,
    dino_backbone_prefix,
    looks_like_vit,
    open_clip_state_dict,
    read_export_metadata,
    strip_prefix,
    unwrap_module,
)
from moma.models.safe_load import list_keys

# The name of the module this code was split from, so log records (and logging configs or
# filters that select them by logger name, as the tests do) stay as they were.
log = logging.getLogger("moma.models.checkpoint")

# Keys that belong to a pre-training head, never to a num_classes=0 backbone.
HEAD_PREFIXES = ("head.", "decoder_", "mask_token")


def _backbone_config_kwargs(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """BackboneConfig fields -> create_vit kwargs (unset ones and training-only ones dropped)."""
    skip = {"arch", "drop_path_rate", "num_classes"}
    return {k: v for k, v in cfg.items() if k not in skip and v is not None}


def extract_backbone_state_dict(
    obj: Mapping[str, Any], fmt: str, path: str | Path | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Pick the backbone out of a checkpoint, in timm key names.

    Returns ``(state_dict, metadata)``. Pre-training heads (``head.*``, ``decoder_*``,
    ``mask_token``) are removed and listed in ``metadata["dropped"]``; ``metadata["ignored"]``
    counts keys outside the backbone (MoCo v3 momentum encoder and predictor, ...).
    ``metadata["arch"]`` / ``metadata["timm_kwargs"]`` hold what the file says about the
    architecture (moma files only). ``path`` (for messages, and to find a moma export's JSON
    sidecar) is optional.
    """
    where = Path(path) if path is not None else Path("<checkpoint>")
    meta: dict[str, Any] = {
        "format": fmt,
        "arch": None,
        "timm_kwargs": {},
        "dropped": [],
        "ignored": 0,
    }
    if fmt == "mae":
        sd = obj.get("model", obj)
        if not looks_like_vit(sd):
            raise CheckpointError(
                f"{where}: format 'mae' expects {{'model': state_dict}} with timm ViT keys "
                f"(patch_embed.proj.weight, blocks.0.*); top-level keys: {list_keys(map(str, obj))}"
            )
        sd = unwrap_module(sd)
    elif fmt == "mocov3":
        full = obj.get("state_dict", obj)
        full = full if isinstance(full, Mapping) else {}
        prefix = next(
            (
                p
                for p in ("module.base_encoder.", "base_encoder.")
                if any(str(k).startswith(p) for k in full)
            ),
            None,
        )
        if prefix is None:
            raise CheckpointError(
                f"{where}: format 'mocov3' expects {{'state_dict': ...}} with 'module.base_encoder.*' keys; "
                f"found {list_keys(map(str, full or obj))}"
            )
        sd = strip_prefix(full, prefix)
        meta["ignored"] = len(full) - len(sd)
        meta["source_prefix"] = prefix
    elif fmt == "timm":
        sd = obj
        for key in ("state_dict", "model"):
            if looks_like_vit(obj.get(key)):
                sd = obj[key]
                break
        if not looks_like_vit(sd):
            raise CheckpointError(
                f"{where}: format 'timm' expects a timm ViT state dict (patch_embed.proj.weight, "
                f"blocks.0.*); found {list_keys(map(str, obj))}"
            )
        sd = unwrap_module(sd)
    elif fmt == "dino":
        teacher = obj.get("teacher")
        prefix = dino_backbone_prefix(teacher) if isinstance(teacher, Mapping) else None
        if prefix is None:
            raise CheckpointError(
                f"{where}: format 'dino' expects {{'teacher': {{'backbone.*': ...}}}} with timm ViT "
                f"keys under backbone.; top-level keys: {list_keys(map(str, obj))}"
            )
        sd = strip_prefix(teacher, prefix) if prefix else dict(teacher)
        meta["ignored"] = len(teacher) - len(sd)
        meta["source_prefix"] = f"teacher.{prefix}"
        log.info("%s: DINO checkpoint: taking the teacher's backbone (%r)", where, prefix)
    elif fmt == "open_clip":
        full = open_clip_state_dict(obj)
        if full is None:
            raise CheckpointError(
                f"{where}: format 'open_clip' expects an image tower under {OPEN_CLIP_TRUNK!r}; "
                f"top-level keys: {list_keys(map(str, obj))}"
            )
        sd = strip_prefix(full, OPEN_CLIP_TRUNK)
        meta["ignored"] = len(full) - len(sd)
        meta["source_prefix"] = OPEN_CLIP_TRUNK
    elif fmt == "moma":
        sd = _extract_moma(obj, where, meta, path)
    else:
        raise CheckpointError(
            f"{where}: unknown format {fmt!r}; choose one of {', '.join(FORMATS)}"
        )

    bad = [
        str(k) for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)
    ]
    if bad:
        raise CheckpointError(f"{where}: backbone entries that are not tensors: {list_keys(bad)}")
    sd = dinov2_to_timm(sd, where)
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k.startswith(HEAD_PREFIXES):
            meta["dropped"].append(k)
        else:
            out[k] = v
    return out, meta


_CHUNKED_BLOCK = re.compile(r"^blocks\.\d+\.(\d+)\.")


def dinov2_to_timm(sd: Mapping[str, torch.Tensor], where: Path) -> dict[str, torch.Tensor]:
    """DINOv2's key layout in timm's names (the layout timm's own DINOv2 loader produces).

    - ``register_tokens [1, R, D]`` -> ``reg_token``. DINOv2 adds ``pos_embed[:, 0]`` to the CLS
      token and none to the registers; timm's register ViTs have no position for either
      (``no_embed_class``), so the CLS position is folded into ``cls_token`` (the same sum) and
      ``pos_embed`` keeps the patch positions only.
    - ``blocks.C.N.*`` (training checkpoints with ``block_chunks``) -> ``blocks.N.*``.
    - ``mask_token [1, D]`` is a pre-training key and is dropped with the heads.
    Other layouts are returned unchanged.
    """
    out = dict(sd)
    if any(_CHUNKED_BLOCK.match(k) for k in out):
        out = {_CHUNKED_BLOCK.sub(r"blocks.\1.", k): v for k, v in out.items()}
    if "register_tokens" in out:
        if "cls_token" not in out or "pos_embed" not in out:
            raise CheckpointError(
                f"{where}: DINOv2 register_tokens without cls_token and pos_embed cannot be mapped"
            )
        pos = out.pop("pos_embed")  # [1, 1 + L, D]
        out["reg_token"] = out.pop("register_tokens")
        out["cls_token"] = out.pop("cls_token") + pos[:, :1]
        out["pos_embed"] = pos[:, 1:]  # [1, L, D]
        log.info("%s: DINOv2 register layout mapped to timm's (reg_token, no_embed_class)", where)
    return out


def _extract_moma(
    obj: Mapping[str, Any], where: Path, meta: dict[str, Any], path: str | Path | None
) -> dict[str, Any]:
    if "state_dict" not in obj:  # an export: flat tensors + sidecar JSON
        info = read_export_metadata(path) if path is not None and Path(path).exists() else None
        if info is not None:
            version = info.get("format_version")
            if version != FORMAT_VERSION:
                raise CheckpointError(
                    f"{where}: moma export format_version {version!r} is not supported (expected {FORMAT_VERSION})"
                )
            meta["arch"] = info.get("arch")
            meta["timm_kwargs"] = _backbone_config_kwargs(info.get("timm_kwargs") or {})
        else:
            log.info("%s: no moma export metadata found; inferring the architecture", where)
        if not looks_like_vit(obj):
            raise CheckpointError(
                f"{where}: moma export holds no ViT keys: {list_keys(map(str, obj))}"
            )
        return dict(obj)
    full = obj["state_dict"]
    if not isinstance(full, Mapping):
        raise CheckpointError(f"{where}: 'state_dict' is a {type(full).__name__}, not a dict")
    info = obj.get("moma")
    if isinstance(info, Mapping):
        version = info.get("format_version")
        if version != FORMAT_VERSION:
            raise CheckpointError(
                f"{where}: moma checkpoint format_version {version!r} is not supported (expected {FORMAT_VERSION})"
            )
        method = info.get("method")
        if method not in METHOD_PREFIXES:
            raise CheckpointError(
                f"{where}: moma checkpoint has unknown method {method!r} (expected one of {', '.join(METHOD_PREFIXES)})"
            )
        prefix = METHOD_PREFIXES[method]
        backbone = info.get("backbone") or {}
        if dataclasses.is_dataclass(backbone) and not isinstance(backbone, type):
            backbone = dataclasses.asdict(backbone)
        if isinstance(backbone, Mapping):
            meta["arch"] = backbone.get("arch")
            meta["timm_kwargs"] = _backbone_config_kwargs(backbone)
        meta["method"] = method
    else:
        prefix = next(
            (
                p
                for p in ("student.", "encoder.", "base_encoder.")
                if looks_like_vit(strip_prefix(full, p))
            ),
            None,
        )
        if prefix is None:
            raise CheckpointError(
                f"{where}: moma checkpoint without a 'moma' entry and no backbone under "
                f"student./encoder./base_encoder.; keys: {list_keys(map(str, full))}"
            )
        log.info("%s: no 'moma' entry; taking the backbone under %r", where, prefix)
    sd = strip_prefix(full, prefix)
    if not sd:
        raise CheckpointError(
            f"{where}: no keys under {prefix!r} in state_dict: {list_keys(map(str, full))}"
        )
    meta["ignored"] = len(full) - len(sd)
    meta["source_prefix"] = prefix
    return sd
