"""Checkpoint formats and how :func:`moma.models.checkpoint.load_backbone` tells them apart.

The format names (``FORMATS``), the moma export / training-checkpoint markers, the key-layout
tests shared with :mod:`moma.models.checkpoint_keys`, and :func:`detect_format`. Re-exported by
:mod:`moma.models.checkpoint`, whose docstring describes the formats.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from moma.errors import CheckpointError
from moma.models.safe_load import is_safetensors, list_keys, one_line, safetensors_metadata

FORMATS = ("auto", "mae", "mocov3", "timm", "moma", "dino", "open_clip")
MOMA_EXPORT_FORMAT = "moma-backbone"
FORMAT_VERSION = 1
# Where each moma training method keeps its backbone inside the Lightning state_dict.
METHOD_PREFIXES = {"mae": "encoder.", "mocov3": "base_encoder.", "moma": "student."}


def strip_prefix(sd: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {
        k[len(prefix) :]: v for k, v in sd.items() if isinstance(k, str) and k.startswith(prefix)
    }


def unwrap_module(sd: Mapping[str, Any]) -> dict[str, Any]:
    """Drop a DistributedDataParallel ``module.`` prefix carried by every key."""
    if sd and all(isinstance(k, str) and k.startswith("module.") for k in sd):
        return strip_prefix(sd, "module.")
    return dict(sd)


def looks_like_vit(sd: Any) -> bool:
    if not isinstance(sd, Mapping):
        return False
    sd = unwrap_module(sd)
    return "patch_embed.proj.weight" in sd and any(
        isinstance(k, str) and k.startswith("blocks.0.") for k in sd
    )


def dino_backbone_prefix(teacher: Mapping[str, Any]) -> str | None:
    """Where a DINO / DINOv2 training checkpoint's ``teacher`` dict keeps its ViT, or ``None``.

    DINO writes ``{"teacher": {"backbone.*", "head.*"}, "student": {"module.backbone.*", ...}}``
    (``module.`` on the teacher too in some files); DINOv2 ``backbone.*``, ``dino_head.*``,
    ``ibot_head.*``.
    """
    for prefix in ("backbone.", "module.backbone.", ""):
        if looks_like_vit(strip_prefix(teacher, prefix) if prefix else teacher):
            return prefix
    return None


OPEN_CLIP_TRUNK = "visual.trunk."  # an OpenCLIP model whose image tower is a timm ViT (SigLIP)


def open_clip_state_dict(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The full state dict of an OpenCLIP file whose image tower is a timm ViT, else ``None``."""
    for sd in (obj, obj.get("state_dict")):
        if isinstance(sd, Mapping):
            sd = unwrap_module(sd)
            if looks_like_vit(strip_prefix(sd, OPEN_CLIP_TRUNK)):
                return sd
    return None


def _sidecar_paths(path: Path) -> list[Path]:
    return [path.with_suffix(".json"), path.with_name(path.name + ".json")]


def read_export_metadata(path: str | Path) -> dict | None:
    """The metadata of a moma export: its JSON sidecar, else the copy in the safetensors header."""
    path = Path(path)
    for side in _sidecar_paths(path):
        if side != path and side.is_file():
            try:
                meta = json.loads(side.read_text())
            except (OSError, ValueError) as e:
                raise CheckpointError(
                    f"{side}: unreadable moma export metadata: {one_line(e)}"
                ) from None
            if isinstance(meta, dict) and meta.get("format") == MOMA_EXPORT_FORMAT:
                return meta
    if path.suffix == ".safetensors" or is_safetensors(path):
        raw = safetensors_metadata(path).get("moma")
        if raw:
            try:
                meta = json.loads(raw)
            except ValueError:
                return None
            if isinstance(meta, dict) and meta.get("format") == MOMA_EXPORT_FORMAT:
                return meta
    return None


def detect_format(obj: Mapping[str, Any], path: str | Path) -> str:
    """Tell the format of a checkpoint read by :func:`read_checkpoint` (one of FORMATS minus auto)."""
    path = Path(path)
    flat = all(isinstance(v, torch.Tensor) for v in obj.values())
    if flat and path.exists() and read_export_metadata(path) is not None:
        return "moma"
    if isinstance(obj.get("moma"), Mapping) and isinstance(obj.get("state_dict"), Mapping):
        return "moma"
    teacher = obj.get("teacher")
    if isinstance(teacher, Mapping) and dino_backbone_prefix(teacher) is not None:
        return "dino"
    if open_clip_state_dict(obj) is not None:
        return "open_clip"
    sd = obj.get("state_dict")
    if isinstance(sd, Mapping):
        if any(
            isinstance(k, str) and k.startswith(("module.base_encoder.", "base_encoder."))
            for k in sd
        ):
            return "mocov3"
        if looks_like_vit(sd):
            return "timm"
        for prefix in ("student.", "encoder."):
            if looks_like_vit(strip_prefix(sd, prefix)):
                return "moma"
    if looks_like_vit(obj.get("model")):
        return "mae"
    if looks_like_vit(obj):
        return "timm"
    raise CheckpointError(
        f"{path}: cannot tell the checkpoint format (top-level keys: {list_keys(map(str, obj))}); "
        f"pass format= one of {', '.join(FORMATS[1:])}"
    )
