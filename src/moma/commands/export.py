"""``moma export``: any backbone moma reads -> a timm-loadable ``.safetensors`` + JSON."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from moma.errors import ConfigError
from moma.models.checkpoint import load_backbone
from moma.models.export import export_backbone
from moma.paths import output_folder
from moma.run_folder import last_checkpoint
from moma.validation import prepare_run

log = logging.getLogger(__name__)


@dataclass
class ExportConfig:
    """Export a backbone (a training checkpoint, an official MAE/MoCo v3 file, ...)."""

    checkpoint: str  # a moma run folder, its last.ckpt, or any file load_backbone reads
    out: str = "backbone.safetensors"
    format: str = "auto"  # auto | moma | mae | mocov3 | timm | dino | open_clip
    arch: str | None = None  # timm base arch; inferred when omitted
    trust_pickle: bool = False  # only for files you trust: allows arbitrary unpickling


def run_export(cfg: ExportConfig) -> Path:
    """Load ``cfg.checkpoint`` (projectors, decoders, teachers dropped) and write the export."""
    cfg = prepare_run(cfg)
    out = Path(cfg.out)
    if out.is_dir():  # (the .safetensors ending is one of the option rules)
        raise ConfigError(
            f"export --out {out} is a folder; give a file path ending in .safetensors"
        )
    output_folder(out.parent, "export --out")
    src = Path(cfg.checkpoint)
    if src.is_dir():  # a run folder: its newest checkpoint
        src = last_checkpoint(src)
    model = load_backbone(src, arch=cfg.arch, format=cfg.format, trust_pickle=cfg.trust_pickle)
    out = export_backbone(model, out, arch=cfg.arch, extra={"source": str(src)})
    log.info("exported %s -> %s (+ %s)", src, out, out.with_suffix(".json"))
    return out
