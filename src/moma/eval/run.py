"""``run_eval``: one protocol on one backbone, written as result JSONs (used by the
``moma eval`` commands, :mod:`moma.commands.evaluate`, and the quickstart)."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

from moma.data import load_split, num_classes
from moma.data.fingerprint import dataset_fingerprint, split_fingerprint
from moma.errors import ConfigError
from moma.eval.baselines import RawPixels, ResolvedBackbone, resolve_backbone
from moma.eval.config import FinetuneConfig, KnnConfig, LinearConfig
from moma.eval.features import iterate_batches
from moma.eval.finetune import finetune_eval
from moma.eval.knn import knn_eval
from moma.eval.linear import linear_eval
from moma.eval.results import ROLES, check_result_name, make_record, write_result
from moma.models.vit import BackboneConfig
from moma.moved import forwarder
from moma.paths import output_folder
from moma.run_folder import RunFolder
from moma.validation import validate

log = logging.getLogger(__name__)
__getattr__ = forwarder(__name__)  # the moma eval run configs moved to moma.commands.evaluate

PROTOCOLS = ("knn", "linear", "finetune")
CONFIGS = {"knn": KnnConfig, "linear": LinearConfig, "finetune": FinetuneConfig}


def dataset_name(data_cfg: Any) -> str:
    """A short dataset name for result JSONs (``data_cfg.dataset`` / ``.name`` / class name)."""
    for attr in ("dataset", "name"):
        v = getattr(data_cfg, attr, None)
        if isinstance(v, str) and v:
            return v
    return type(data_cfg).__name__ if data_cfg is not None else "unknown"


def data_fingerprints(data_cfg: Any, datasets: tuple | None) -> dict[str, str] | None:
    """``{"train": ..., "test": ...}`` content fingerprints of the evaluation data, the
    feature cache's key (never the dataset's path: a folder edited in place is a new key);
    ``None`` when the data cannot be identified (then nothing is cached)."""

    if datasets is None:
        return {split: split_fingerprint(data_cfg, split) for split in ("train", "test")}
    prints = dict(zip(("train", "test"), map(dataset_fingerprint, datasets), strict=True))
    if None in prints.values():
        log.info("feature cache off: the given datasets cannot be fingerprinted")
        return None
    return prints


def _load_data(data_cfg: Any, datasets: tuple | None) -> tuple[Any, Any, int | None]:
    """``(train, test, num_classes)`` from ``datasets`` or ``moma.data.load_split``."""
    if datasets is not None:
        train, test = datasets
        return train, test, None

    return load_split(data_cfg, "train"), load_split(data_cfg, "test"), num_classes(data_cfg)


def _img_size(data: Any) -> int | None:
    """Image side of the first sample (part of the feature cache key)."""
    if isinstance(getattr(data, "img_size", None), int):
        return int(data.img_size)
    try:
        return int(data[0][0].shape[-1])
    except Exception:  # iterable-only datasets: the data config identifies the size
        return None


def _check_input_size(bb: ResolvedBackbone, img_size: int | None) -> None:
    """A ViT takes the image size it was built for: say so rather than fail in its forward."""
    embed = getattr(bb.model, "patch_embed", None)
    want = tuple(getattr(embed, "img_size", None) or ())
    if img_size is None or not want or want == (img_size, img_size):
        return
    fix = "--random_init.img_size" if bb.spec == "random-init" else "--data.img_size"
    raise ConfigError(
        f"backbone {bb.spec} takes {want[0]}x{want[1]} px images, the data gives "
        f"{img_size}x{img_size} (data.img_size); make them agree ({fix})"
    )


def make_config(protocol: str, config: Any = None, **overrides: Any) -> Any:
    """The protocol's config dataclass, from ``config`` (or defaults) with ``overrides``."""
    if protocol not in CONFIGS:
        raise ConfigError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    cls = CONFIGS[protocol]
    cfg = config if config is not None else cls()
    if not isinstance(cfg, cls):
        raise ConfigError(f"protocol {protocol!r} needs a {cls.__name__}, got {type(cfg).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown {protocol} option(s): {', '.join(unknown)}")
    cfg = dataclasses.replace(cfg, **overrides)
    validate(cfg, f"{protocol}.")
    return cfg


def run_eval(
    protocol: str,
    backbone_spec: str | Path,
    data_cfg: Any,
    out_dir: str | Path,
    name: str,
    role: str,
    *,
    config: KnnConfig | LinearConfig | FinetuneConfig | None = None,
    backbone_cfg: BackboneConfig | None = None,
    arch: str | None = None,
    seed: int = 0,
    device: str | None = None,
    datasets: tuple | None = None,
    extras: dict | None = None,
    **overrides: Any,
) -> dict[str, dict]:
    """Evaluate one backbone with one protocol and write ``out_dir/results/*.json``.

    Args:
        protocol: ``knn`` (writes ``knn-k<k>`` for every k), ``linear`` or ``finetune``.
        backbone_spec: a weights file, ``raw-pixels`` or ``random-init``.
        data_cfg: a ``moma.data.DataConfig`` (splits come from ``load_split``).
        out_dir: run folder; results go to ``out_dir/results``.
        name: display name (also the file-name suffix).
        role: ``baseline``, ``teacher`` or ``student``.
        config: the protocol's config dataclass; ``overrides`` replace its fields.
        backbone_cfg: architecture of the ``random-init`` baseline.
        arch: timm architecture hint for loading a weights file.
        seed: seed of the random-init baseline, the probe and fine-tuning.
        device: torch device (default: CUDA if available, else CPU).
        datasets: ``(train, test)`` to use instead of ``load_split(data_cfg, ...)``.
        extras: more keys for every result JSON (e.g. ``train_images``).

    Returns:
        ``{protocol label: result record}`` (e.g. ``{"knn-k20": {...}, "knn-k200": {...}}``).
    """
    if role not in ROLES:
        raise ConfigError(f"role must be one of {ROLES}, got {role!r}")
    cfg = make_config(protocol, config, **overrides)
    out_dir = output_folder(out_dir, "out_dir")
    labels = [f"knn-k{k}" for k in cfg.k] if protocol == "knn" else [protocol]
    for label in labels:  # before any work: a name clash would lose another model's result
        check_result_name(out_dir, label, name)
    t0 = time.perf_counter()
    bb: ResolvedBackbone = resolve_backbone(backbone_spec, backbone_cfg, arch=arch, seed=seed)
    train, test, n_classes = _load_data(data_cfg, datasets)
    img_size = _img_size(train)
    _check_input_size(bb, img_size)
    common = {
        # Raw pixels have no tokens: their features are the image itself, whatever cfg says.
        "features": "pixels" if isinstance(bb.model, RawPixels) else cfg.features,
        "backbone": bb.spec,
        "backbone_sha256": bb.sha256,
        "name": name,
        "role": role,
        "dataset": dataset_name(data_cfg),
        "seed": seed,
    }
    more = {**bb.meta, **(extras or {})}
    records: dict[str, dict] = {}
    # kNN and the linear probe share one feature cache (features extracted once per backbone).
    cache_dir = None
    if getattr(cfg, "use_cache", False):
        cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else RunFolder(out_dir).feature_cache
    prints = data_fingerprints(data_cfg, datasets) if cache_dir is not None else None
    if prints is None:
        cache_dir = None
    parts = {"backbone": bb.identity, "data": prints, "img_size": img_size}
    if protocol == "knn":
        res = knn_eval(bb.model, train, test, cfg, n_classes, device, cache_dir, parts)
        wall = time.perf_counter() - t0
        for k, top1 in res.top1.items():
            used = res.requested_k[k]
            # Labelled by the k actually used: a k clamped to a small bank is another protocol.
            label = f"knn-k{used}"
            clamped = {"k_requested": k} if used != k else {}
            records[label] = make_record(
                value=top1,
                protocol=label,
                wall_time_s=wall,
                **common,
                k=used,
                **clamped,
                temperature=cfg.temperature,
                precision=cfg.precision,
                **more,
            )
    elif protocol == "linear":
        res = linear_eval(bb.model, train, test, cfg, n_classes, device, cache_dir, parts, seed)
        records["linear"] = make_record(
            value=res.top1,
            protocol="linear",
            wall_time_s=time.perf_counter() - t0,
            **common,
            train_top1=res.train_top1,
            epochs=cfg.epochs,
            lr=cfg.lr,
            batch_size=cfg.train_batch_size,
            optimizer="sgd",
            precision=cfg.precision,
            feature_cache_hits=res.cache_hits,
            final_loss=res.losses[-1] if res.losses else None,
            **more,
        )
    else:
        if n_classes is None:
            n_classes = _num_classes_from(train, test)
        res = finetune_eval(bb.model, train, test, n_classes, cfg, device, seed)
        records["finetune"] = make_record(
            value=res.top1,
            protocol="finetune",
            wall_time_s=time.perf_counter() - t0,
            **common,
            epochs=cfg.epochs,
            steps=res.steps,
            images=res.images,
            lr=cfg.lr,
            layer_decay=cfg.layer_decay,
            drop_path=cfg.drop_path,
            mixup=cfg.mixup,
            cutmix=cfg.cutmix,
            label_smoothing=cfg.label_smoothing,
            precision=cfg.precision,
            final_loss=res.losses[-1] if res.losses else None,
            **more,
        )
    for label, rec in records.items():
        path = write_result(out_dir, rec)
        log.info("%s %s: top-1 %.2f%% -> %s", label, name, rec["value"], path)
    return records


def _num_classes_from(*datasets: Any) -> int:
    """``max label + 1`` over datasets (used when no data config says it)."""

    top = 0
    for d in datasets:
        labels = getattr(d, "labels", None)
        if labels is not None:
            top = max(top, int(labels.max()))
            continue
        for _, y in iterate_batches(d, 1024):
            top = max(top, int(y.max()))
    return top + 1
