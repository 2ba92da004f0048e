"""What a backbone spec names: a checkpoint file, raw pixels or a random-init ViT."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from moma.errors import ConfigError
from moma.models.checkpoint import load_backbone, sha256_file
from moma.models.vit import BackboneConfig
from moma.run_folder import RunFolder

log = logging.getLogger(__name__)

RAW_PIXELS = "raw-pixels"
RANDOM_INIT = "random-init"
BASELINES = (RAW_PIXELS, RANDOM_INIT)


class RawPixels(nn.Module):
    """A backbone-like baseline whose features are the flattened (normalised) pixels."""

    def forward(self, x: Tensor) -> Tensor:
        """``[N, C, H, W] -> [N, C*H*W]``."""
        return x.flatten(1)


@dataclass
class ResolvedBackbone:
    """A backbone ready to evaluate, with what the result JSON records about it.

    Attributes:
        model: the module (a timm ``VisionTransformer`` or :class:`RawPixels`).
        spec: the spec as given (path or baseline name), recorded as ``backbone``.
        sha256: sha256 of the weights file, ``None`` for baselines.
        is_baseline: ``True`` for raw pixels and random init.
        identity: what determines the features (for cache keys).
        meta: training facts found next to the checkpoint (images seen, wall time).
    """

    model: nn.Module
    spec: str
    sha256: str | None
    is_baseline: bool
    identity: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


def random_init_backbone(cfg: BackboneConfig | None = None, seed: int = 0) -> nn.Module:
    """A randomly initialised ViT (timm's init) built from ``cfg`` with a fixed ``seed``.

    The global RNG state is left as it was.
    """
    cfg = cfg or BackboneConfig()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cfg.build()


#: Sidecar keys of an export copied into result JSONs (-> result key), for compute columns.
SIDECAR_KEYS = {
    "images_seen": "train_images",
    "images_processed": "train_images",
    "train_images": "train_images",
    "wall_time_s": "train_wall_time_s",
    "train_wall_time_s": "train_wall_time_s",
    "global_step": "train_steps",
    "method": "train_method",
}


def _checkpoint_meta(path: Path) -> dict:
    """Training facts from an export's JSON sidecar (if any), for the report's compute columns."""
    meta: dict = {}
    for side in (path.with_suffix(".json"), path.with_name(path.name + ".json")):
        if side == path or not side.is_file():
            continue
        try:
            data = json.loads(side.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            for key, dst in SIDECAR_KEYS.items():
                if isinstance(data.get(key), int | float | str):
                    meta.setdefault(dst, data[key])
        break
    return meta


def backbone_file(spec: str | Path) -> Path:
    """The weights file a spec names: a file, or a run folder's export / last checkpoint."""
    path = Path(spec)
    return RunFolder(path).backbone_file() if path.is_dir() else path


def resolve_backbone(
    spec: str | Path,
    backbone_cfg: BackboneConfig | None = None,
    arch: str | None = None,
    seed: int = 0,
    **overrides,
) -> ResolvedBackbone:
    """Turn a backbone spec into a model.

    Args:
        spec: a weights file (loaded with ``moma.models.checkpoint.load_backbone``), a run
            folder (its ``backbone.safetensors``, else ``checkpoints/last.ckpt``),
            ``"raw-pixels"`` or ``"random-init"``.
        backbone_cfg: architecture of the random-init baseline (default ``BackboneConfig()``).
        arch: timm architecture hint for ``load_backbone``.
        seed: seed of the random-init baseline.
        overrides: passed to ``load_backbone``.
    """
    spec = str(spec)
    if spec == RAW_PIXELS:
        return ResolvedBackbone(RawPixels(), spec, None, True, {"baseline": spec})
    if spec == RANDOM_INIT:
        cfg = backbone_cfg or BackboneConfig()
        model = random_init_backbone(cfg, seed)
        identity = {"baseline": spec, "config": asdict(cfg), "seed": seed}
        return ResolvedBackbone(model, spec, None, True, identity)
    path = backbone_file(spec)
    if not path.is_file():
        raise ConfigError(
            f"backbone {spec!r} is neither a file nor one of the baselines {', '.join(BASELINES)}"
        )

    digest = sha256_file(path)
    model = load_backbone(path, arch=arch, **overrides)
    identity = {
        "sha256": digest,
        "arch": arch,
        "overrides": {k: str(v) for k, v in overrides.items()},
    }
    log.info("loaded backbone %s (sha256 %s)", path, digest[:12])
    return ResolvedBackbone(model, str(path), digest, False, identity, _checkpoint_meta(path))
