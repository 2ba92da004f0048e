"""Load ViT backbones safely from the checkpoint formats a user brings (docs/DESIGN.md,
section 2).

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
- ``"dino"``: DINO / DINOv2 training checkpoints, ``{"teacher": {"backbone.*", "head.*"},
  "student": {"module.backbone.*", ...}, ...}`` (``module.`` on the teacher too in some files;
  DINOv2 adds ``dino_head.*`` / ``ibot_head.*`` and may chunk its blocks as ``blocks.C.N.*``). The
  teacher's backbone is taken, as DINO's own evaluation does. DINO pickles its ``argparse`` args,
  so the full file needs ``trust_pickle=True``; its backbone-only releases are plain ``timm`` files.
- DINOv2 hub files (``dinov2_vits14_pretrain.pth``, ``..._reg4_pretrain.pth``) are ``timm``
  files in DINOv2's key names: ``mask_token`` is dropped, ``register_tokens`` become timm's
  ``reg_token`` (the CLS position folded into ``cls_token``; ``no_embed_class``), in any format.
- ``"open_clip"``: an OpenCLIP model whose image tower is a timm ViT (``visual.trunk.*``, e.g.
  SigLIP's ``open_clip_pytorch_model.bin``); the text tower and projections are ignored.
- A ViT without a CLS token (SigLIP's attention-pooled ``global_pool='map'``, or a mean-pooled
  one) is rebuilt with its pooling head; :func:`moma.models.vit.global_feature` gives its pooled
  feature where other ViTs give the CLS token.
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

Layout: the format names and detection live in :mod:`moma.models.checkpoint_formats`, picking the
backbone out of each format in :mod:`moma.models.checkpoint_keys`, architecture inference in
:mod:`moma.models.checkpoint_arch`; this module assembles them in :func:`load_backbone` (with
``pos_embed`` resampling and the key/shape check) and re-exports their public names.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from timm.layers import resample_abs_pos_embed, to_2tuple
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from moma.errors import CheckpointError

# The loader's pieces live in their own modules; the names in ``__all__`` are this module's
# public API (the loader's facade), the rest moved (see moma.moved).
from moma.models.checkpoint_arch import (
    arch_defaults,
    base_arch,
    guess_num_heads,
    infer_vit_kwargs,
)
from moma.models.checkpoint_formats import FORMATS, detect_format, read_export_metadata
from moma.models.checkpoint_keys import extract_backbone_state_dict
from moma.models.safe_load import list_keys, one_line, read_checkpoint, sha256_file
from moma.models.vit import create_vit
from moma.moved import forwarder

log = logging.getLogger(__name__)
__getattr__ = forwarder(__name__)  # names that moved keep importing from here (warn once)

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

_SHOW = 5  # keys listed in an error message before "(+N more)"


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
    base = arch or meta.get("arch") or base_arch(kwargs["embed_dim"])
    if "num_heads" in overrides:
        heads_from = "override"
    elif "num_heads" in kwargs:
        heads_from = "file metadata"
    elif fmt == "moma" and meta.get("arch") and arch_defaults(meta["arch"]) is not None:
        # a moma config without num_heads trained with its arch's default
        kwargs["num_heads"] = arch_defaults(meta["arch"])[1]
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
