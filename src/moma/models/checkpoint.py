"""Load ViT backbones safely from the checkpoint formats a user brings (DESIGN.md section 2).

Formats (``format=`` of :func:`load_backbone`):

- ``"mae"``: official MAE files, ``{"model": state_dict}`` in timm key names. The ``_full`` /
  visualisation variants add decoder keys (``mask_token``, ``decoder_*``); they are dropped and
  reported. MAE *training* checkpoints also pickle an ``argparse.Namespace`` (``"args"``), so they
  need ``trust_pickle=True`` (see below).
- ``"mocov3"``: official MoCo v3 files, ``{"state_dict": ...}`` with ``module.base_encoder.*``,
  ``module.momentum_encoder.*`` and ``module.predictor.*``. The backbone is ``base_encoder`` minus
  ``head.*`` (the projector); the momentum encoder is never used.
- ``"timm"``: a plain timm state dict (``.pth`` / ``.pt`` / ``.safetensors``), optionally under a
  ``"state_dict"`` or ``"model"`` key.
- ``"moma"``: this project's files: exports (``backbone.safetensors`` + ``backbone.json``, written by
  :func:`moma.models.export.export_backbone`) and Lightning training checkpoints (``.ckpt``) whose
  ``state_dict`` holds the backbone under ``encoder.`` (MAE method), ``base_encoder.`` (MoCo v3
  method) or ``student.`` (MOMA method), described by a ``"moma"`` entry
  ``{"format_version": 1, "method": ..., "backbone": {BackboneConfig fields}}``.
- ``"auto"`` (default): told apart by file extension and keys (:func:`detect_format`).

Safety: files are read with ``torch.load(..., weights_only=True)`` or safetensors, so no code in a
file ever runs. A file that needs arbitrary unpickling is refused with a :class:`CheckpointError`
naming the object it needs (moma's own config dataclasses, e.g. in a Lightning checkpoint's
``hyper_parameters``, are allowed). ``trust_pickle=True`` (only for files you trust) first allows
``argparse.Namespace`` (what MAE / MoCo v3 training checkpoints need) and, only if more is needed,
falls back to ``weights_only=False`` with a warning in the log.

Architecture: with ``arch=None`` everything that the weights determine is read from them
(``embed_dim``, ``depth``, ``patch_size``, ``img_size`` from the ``pos_embed`` length assuming a
square grid, ``mlp_ratio``, qkv bias, class/register tokens, ...). ``num_heads`` cannot be read
from weights: it comes from the file's metadata (moma files), else from the layout (MoCo v3 ViT-S
and ViT-B: 12 heads), else from ``arch``'s default, else from timm's standard sizes
(192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16), else a guess of 64-dim heads (logged as a
warning). Any of them can be forced
with keyword ``overrides`` (``num_heads=12``). ``pos_embed`` is always taken from the file (MAE
and MoCo v3 sin-cos tables differ); it is resampled only when ``img_size=`` is passed and differs
from the file's, and the log says so.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from timm.layers import resample_abs_pos_embed, to_2tuple
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from moma.errors import CheckpointError
from moma.models.safe_load import (
    is_safetensors,
    list_keys,
    one_line,
    read_checkpoint,
    safetensors_metadata,
    sha256_file,
)
from moma.models.vit import create_vit

log = logging.getLogger(__name__)

__all__ = [
    "FORMATS",
    "detect_format",
    "extract_backbone_state_dict",
    "guess_num_heads",
    "infer_vit_kwargs",
    "load_backbone",
    "read_checkpoint",
    "read_export_metadata",
    "sha256_file",
]

FORMATS = ("auto", "mae", "mocov3", "timm", "moma")
MOMA_EXPORT_FORMAT = "moma-backbone"
FORMAT_VERSION = 1
# Where each moma training method keeps its backbone inside the Lightning state_dict.
METHOD_PREFIXES = {"mae": "encoder.", "mocov3": "base_encoder.", "moma": "student."}
# Keys that belong to a pre-training head, never to a num_classes=0 backbone.
HEAD_PREFIXES = ("head.", "decoder_", "mask_token")
# timm's standard widths -> heads (vit_tiny/small/base/large/huge).
TIMM_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}
# MoCo v3's own ViTs: ViT-S is 384 dims with 12 heads (timm's vit_small has 6), ViT-B 768 / 12.
MOCOV3_HEADS = {384: 12, 768: 12}
BASE_ARCH = {
    192: "vit_tiny_patch16_224",
    384: "vit_small_patch16_224",
    768: "vit_base_patch16_224",
    1024: "vit_large_patch16_224",
    1280: "vit_huge_patch14_224",
}
_SHOW = 5  # keys listed in an error message before "(+N more)"


# ----------------------------------------------------------------------------- formats


def _strip(sd: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {
        k[len(prefix) :]: v for k, v in sd.items() if isinstance(k, str) and k.startswith(prefix)
    }


def _unwrap_module(sd: Mapping[str, Any]) -> dict[str, Any]:
    """Drop a DistributedDataParallel ``module.`` prefix carried by every key."""
    if sd and all(isinstance(k, str) and k.startswith("module.") for k in sd):
        return _strip(sd, "module.")
    return dict(sd)


def _looks_like_vit(sd: Any) -> bool:
    if not isinstance(sd, Mapping):
        return False
    sd = _unwrap_module(sd)
    return "patch_embed.proj.weight" in sd and any(
        isinstance(k, str) and k.startswith("blocks.0.") for k in sd
    )


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
    sd = obj.get("state_dict")
    if isinstance(sd, Mapping):
        if any(
            isinstance(k, str) and k.startswith(("module.base_encoder.", "base_encoder."))
            for k in sd
        ):
            return "mocov3"
        if _looks_like_vit(sd):
            return "timm"
        for prefix in ("student.", "encoder."):
            if _looks_like_vit(_strip(sd, prefix)):
                return "moma"
    if _looks_like_vit(obj.get("model")):
        return "mae"
    if _looks_like_vit(obj):
        return "timm"
    raise CheckpointError(
        f"{path}: cannot tell the checkpoint format (top-level keys: {list_keys(map(str, obj))}); "
        f"pass format= one of {', '.join(FORMATS[1:])}"
    )


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
        if not _looks_like_vit(sd):
            raise CheckpointError(
                f"{where}: format 'mae' expects {{'model': state_dict}} with timm ViT keys "
                f"(patch_embed.proj.weight, blocks.0.*); top-level keys: {list_keys(map(str, obj))}"
            )
        sd = _unwrap_module(sd)
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
        sd = _strip(full, prefix)
        meta["ignored"] = len(full) - len(sd)
        meta["source_prefix"] = prefix
    elif fmt == "timm":
        sd = obj
        for key in ("state_dict", "model"):
            if _looks_like_vit(obj.get(key)):
                sd = obj[key]
                break
        if not _looks_like_vit(sd):
            raise CheckpointError(
                f"{where}: format 'timm' expects a timm ViT state dict (patch_embed.proj.weight, "
                f"blocks.0.*); found {list_keys(map(str, obj))}"
            )
        sd = _unwrap_module(sd)
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
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k.startswith(HEAD_PREFIXES):
            meta["dropped"].append(k)
        else:
            out[k] = v
    return out, meta


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
        if not _looks_like_vit(obj):
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
                if _looks_like_vit(_strip(full, p))
            ),
            None,
        )
        if prefix is None:
            raise CheckpointError(
                f"{where}: moma checkpoint without a 'moma' entry and no backbone under "
                f"student./encoder./base_encoder.; keys: {list_keys(map(str, full))}"
            )
        log.info("%s: no 'moma' entry; taking the backbone under %r", where, prefix)
    sd = _strip(full, prefix)
    if not sd:
        raise CheckpointError(
            f"{where}: no keys under {prefix!r} in state_dict: {list_keys(map(str, full))}"
        )
    meta["ignored"] = len(full) - len(sd)
    meta["source_prefix"] = prefix
    return sd


# ----------------------------------------------------------------------------- architecture


def _need(sd: Mapping[str, torch.Tensor], key: str, where: Path) -> torch.Tensor:
    if key not in sd:
        raise CheckpointError(f"{where}: cannot infer the architecture: key {key!r} is missing")
    return sd[key]


def mlp_ratio_for(hidden: int, dim: int) -> float:
    """An mlp_ratio for which timm's int(dim * ratio) gives back ``hidden``."""
    r = hidden / dim
    while int(dim * r) < hidden:
        r = math.nextafter(r, math.inf)
    return r


def infer_vit_kwargs(
    sd: Mapping[str, torch.Tensor], path: str | Path = "<checkpoint>"
) -> dict[str, Any]:
    """Everything about a timm ViT that its weights determine (``num_heads`` is not among it)."""
    where = Path(path)
    w = _need(sd, "patch_embed.proj.weight", where)
    if w.ndim != 4:
        raise CheckpointError(
            f"{where}: patch_embed.proj.weight has shape {tuple(w.shape)}, expected a 4-d conv weight"
        )
    embed_dim, in_chans, ph, pw = (int(s) for s in w.shape)
    depth = 1 + max(
        (int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))),
        default=-1,
    )
    if depth == 0:
        raise CheckpointError(f"{where}: cannot infer the architecture: no blocks.* keys")
    fc1 = _need(sd, "blocks.0.mlp.fc1.weight", where)
    kw: dict[str, Any] = {
        "patch_size": ph if ph == pw else (ph, pw),
        "in_chans": in_chans,
        "embed_dim": embed_dim,
        "depth": depth,
        "mlp_ratio": mlp_ratio_for(int(fc1.shape[0]), embed_dim),
        "qkv_bias": "blocks.0.attn.qkv.bias" in sd,
        "class_token": "cls_token" in sd,
    }
    if "blocks.0.attn.q_norm.weight" in sd:
        kw["qk_norm"] = True
    if "blocks.0.ls1.gamma" in sd:
        kw["init_values"] = 1e-5  # any value: the gammas come from the file
    if "norm_pre.weight" in sd:
        kw["pre_norm"] = True
    reg = int(sd["reg_token"].shape[1]) if "reg_token" in sd else 0
    if reg:
        kw["reg_tokens"] = reg
    if "fc_norm.weight" in sd and "norm.weight" not in sd:
        kw["global_pool"] = "avg"  # e.g. MAE fine-tuned: the final norm lives after pooling
    elif "norm.weight" not in sd and "fc_norm.weight" not in sd:
        kw["final_norm"] = False
    pe = sd.get("pos_embed")
    if pe is None:
        kw["pos_embed"] = "none"
        return kw
    n = int(pe.shape[1])
    prefix = int(kw["class_token"]) + reg
    g = math.isqrt(n - prefix)
    if g * g == n - prefix and g > 0:
        pass
    elif prefix and math.isqrt(n) ** 2 == n:
        g = math.isqrt(n)
        kw["no_embed_class"] = True
    else:
        raise CheckpointError(
            f"{where}: pos_embed has {n} positions, which is no square patch grid after {prefix} "
            "prefix token(s); pass img_size= (and patch_size=)"
        )
    kw["img_size"] = g * ph if ph == pw else (g * ph, g * pw)
    return kw


@functools.lru_cache(maxsize=32)
def _arch_defaults(arch: str) -> tuple[int, int] | None:
    """(embed_dim, num_heads) of a timm arch, built on the meta device (no memory, no init)."""
    try:
        m = create_vit(arch, depth=1, device="meta")
    except Exception:
        return None
    return int(m.embed_dim), int(m.blocks[0].attn.num_heads)


def guess_num_heads(embed_dim: int, fmt: str = "timm", arch: str | None = None) -> tuple[int, str]:
    """A head count for weights that do not record one, and where it came from.

    MoCo v3 layout: 12 for 384 and 768 dims. Else ``arch``'s default when its width matches, else
    timm's standard sizes (192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16), else a 64-dim head
    (or the largest of 32/16/8 that divides ``embed_dim``).
    """
    if fmt == "mocov3" and embed_dim in MOCOV3_HEADS:
        return MOCOV3_HEADS[embed_dim], "MoCo v3 layout"
    if arch:
        d = _arch_defaults(arch)
        if d is not None and d[0] == embed_dim:
            return d[1], f"default of {arch}"
    if embed_dim in TIMM_HEADS:
        return TIMM_HEADS[embed_dim], "timm standard size"
    for head_dim in (64, 32, 16, 8):
        if embed_dim % head_dim == 0:
            return embed_dim // head_dim, f"guessed: head dim {head_dim}"
    return 1, "guessed: one head"


def _group(keys: Iterable[str]) -> str:
    """'decoder_blocks.*: 12, mask_token: 1' style summary of dropped keys."""
    counts: dict[str, int] = {}
    for k in keys:
        head = k.split(".", 1)[0]
        name = f"{head}.*" if "." in k else head
        counts[name] = counts.get(name, 0) + 1
    return ", ".join(f"{k} ({n})" if n > 1 else k for k, n in counts.items())


# ----------------------------------------------------------------------------- loading


def load_backbone(
    path: str | Path,
    arch: str | None = None,
    format: str = "auto",
    strict: bool = True,
    trust_pickle: bool = False,
    **overrides: Any,
) -> VisionTransformer:
    """Build a timm ``VisionTransformer`` (``num_classes=0``) with the backbone weights of a file.

    ``path``: a weights file in one of the formats of this module's docstring. ``arch``: timm
    base architecture name; ``None`` takes the file's metadata or one matching the width
    (``vit_base_patch16_224`` etc.), with every size read from the weights. ``format``: ``auto``
    or a format name. ``strict``: unknown extra keys are an error (pre-training heads are always
    dropped and logged); with ``strict=False`` extra and missing keys are logged as warnings and
    missing ones keep their random init. Mis-shaped keys are always an error.
    ``trust_pickle``: allow files that need unpickling of arbitrary objects (only for files you
    trust). ``overrides``: ``create_vit`` keyword arguments that win over everything inferred
    (``num_heads=12``; ``img_size=...`` resamples ``pos_embed``; ``drop_path_rate=...``).

    Raises :class:`CheckpointError` with a one-line message naming the file.
    """
    path = Path(path)
    if format not in FORMATS:
        raise CheckpointError(
            f"{path}: unknown format {format!r}; choose one of {', '.join(FORMATS)}"
        )
    obj = read_checkpoint(path, trust_pickle=trust_pickle)
    fmt = detect_format(obj, path) if format == "auto" else format
    sd, meta = extract_backbone_state_dict(obj, fmt, path=path)
    del obj

    inferred = infer_vit_kwargs(sd, path)
    kwargs: dict[str, Any] = {**inferred, **meta["timm_kwargs"]}
    base = (
        arch or meta.get("arch") or BASE_ARCH.get(int(kwargs["embed_dim"]), "vit_base_patch16_224")
    )
    if "num_heads" in overrides:
        heads_from = "override"
    elif "num_heads" in kwargs:
        heads_from = "file metadata"
    elif fmt == "moma" and meta.get("arch") and _arch_defaults(meta["arch"]) is not None:
        # a moma config without num_heads trained with its arch's default
        kwargs["num_heads"] = _arch_defaults(meta["arch"])[1]
        heads_from = f"default of {meta['arch']} (file metadata)"
    else:
        kwargs["num_heads"], heads_from = guess_num_heads(
            int(overrides.get("embed_dim", kwargs["embed_dim"])), fmt, arch or meta.get("arch")
        )
    kwargs.update(overrides)
    kwargs["num_classes"] = overrides.get("num_classes", 0)

    file_img = inferred.get("img_size")
    if (
        "img_size" in overrides
        and file_img is not None
        and to_2tuple(overrides["img_size"]) != to_2tuple(file_img)
    ):
        sd = _resample_pos_embed(sd, inferred, kwargs, path)

    try:
        model = create_vit(base, **kwargs)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot build {base} with {kwargs}: {one_line(e)}") from None

    dropped = list(meta["dropped"])
    if isinstance(model.fc_norm, nn.Identity):
        fc = [k for k in sd if k.startswith("fc_norm.")]
        dropped += fc
        for k in fc:
            del sd[k]
    _match_and_load(model, sd, path, strict)

    log.info(
        "%s: loaded %s backbone as %s (embed_dim=%s depth=%s num_heads=%s [%s] patch=%s img=%s mlp_ratio=%.3g)%s%s",
        path,
        fmt,
        base,
        kwargs["embed_dim"],
        kwargs["depth"],
        kwargs["num_heads"],
        heads_from,
        kwargs["patch_size"],
        kwargs.get("img_size"),
        float(kwargs["mlp_ratio"]),
        f"; dropped {len(dropped)} head keys: {_group(dropped)}" if dropped else "",
        f"; ignored {meta['ignored']} keys outside {meta['source_prefix']!r}"
        if meta["ignored"]
        else "",
    )
    if heads_from.startswith("guessed"):
        log.warning(
            "%s: num_heads=%s is a guess (%s); pass num_heads= if it differs",
            path,
            kwargs["num_heads"],
            heads_from,
        )
    return model


def _resample_pos_embed(
    sd: dict[str, torch.Tensor], inferred: Mapping[str, Any], kwargs: Mapping[str, Any], path: Path
) -> dict[str, torch.Tensor]:
    old_img, new_img = to_2tuple(inferred["img_size"]), to_2tuple(kwargs["img_size"])
    patch = to_2tuple(kwargs.get("patch_size", inferred["patch_size"]))
    if patch != to_2tuple(inferred["patch_size"]):
        raise CheckpointError(
            f"{path}: cannot change patch_size ({inferred['patch_size']} in the file) and img_size together"
        )
    old = [old_img[0] // patch[0], old_img[1] // patch[1]]
    new = [new_img[0] // patch[0], new_img[1] // patch[1]]
    prefix = (
        0
        if inferred.get("no_embed_class")
        else int(inferred["class_token"]) + int(inferred.get("reg_tokens", 0))
    )
    sd = dict(sd)
    sd["pos_embed"] = resample_abs_pos_embed(
        sd["pos_embed"], new_size=new, old_size=old, num_prefix_tokens=prefix
    )
    log.info(
        "%s: resampled pos_embed from a %dx%d to a %dx%d grid (img_size %s -> %s)",
        path,
        *old,
        *new,
        inferred["img_size"],
        kwargs["img_size"],
    )
    return sd


def _match_and_load(
    model: VisionTransformer, sd: dict[str, torch.Tensor], path: Path, strict: bool
) -> None:
    """Check names and shapes against the model, then load; CheckpointError lists what is wrong."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not k.startswith("head.")]
    new_head = [k for k in own if k not in sd and k.startswith("head.")]
    extra = [k for k in sd if k not in own]
    wrong = [k for k in sd if k in own and tuple(sd[k].shape) != tuple(own[k].shape)]
    if wrong:
        detail = ", ".join(
            f"{k} {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}" for k in wrong[:_SHOW]
        )
        more = f" (+{len(wrong) - _SHOW} more)" if len(wrong) > _SHOW else ""
        hint = (
            " (pos_embed comes from the file; pass img_size= to resample it)"
            if "pos_embed" in wrong
            else ""
        )
        raise CheckpointError(
            f"{path}: {len(wrong)} key(s) with the wrong shape: {detail}{more}{hint}"
        )
    if missing:
        if strict:
            raise CheckpointError(
                f"{path}: {len(missing)} backbone key(s) missing from the file: {list_keys(missing)}"
            )
        log.warning(
            "%s: %d key(s) missing, left randomly initialised: %s",
            path,
            len(missing),
            list_keys(missing),
        )
    if extra:
        if strict:
            raise CheckpointError(
                f"{path}: {len(extra)} unexpected key(s) not in the model: {list_keys(extra)} (strict=False ignores them)"
            )
        log.warning("%s: ignored %d unexpected key(s): %s", path, len(extra), list_keys(extra))
    if new_head:
        log.info("%s: classifier head is newly initialised (%s)", path, list_keys(new_head))
    model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
