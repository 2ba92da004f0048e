"""2-D maps of each backbone's test-split features (t-SNE), coloured by class.

Kept cheap so the quickstart can afford one per backbone: a fixed subsample of the test split
(``MAP_POINTS`` images, the same ones for every backbone), the features the evaluation already
extracted (its feature cache, :mod:`moma.eval.cache`) when they are there, and scikit-learn's
Barnes-Hut t-SNE with ``TSNE_ITERS`` iterations (a few seconds per backbone on 2 CPU cores,
BENCHMARKS.md). Backbones without cached features are embedded on the subsample from their
weights file when the data is given.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

import moma.eval.features as eval_features  # an attribute: tests replace extract_features
from moma.data import load_split
from moma.data.config import is_fashion_mnist
from moma.data.fashion_mnist import CLASSES
from moma.data.folders import class_names, dataset_dir
from moma.eval.baselines import RAW_PIXELS, RawPixels
from moma.eval.cache import load_features, read_cache_meta
from moma.eval.run import dataset_name
from moma.models.checkpoint import load_backbone
from moma.report.plots import save_figure
from moma.report.table import group_models
from moma.run_folder.layout import FEATURE_CACHE

log = logging.getLogger(__name__)

MAP_POINTS = 2000
TSNE_ITERS = 500  # 250 of early exaggeration, 250 to settle: enough for a readable layout
SEED = 0


@dataclass
class MapInput:
    """The features of one backbone on the subsample: ``feats [n, D]``, ``labels [n]``."""

    name: str
    features: str
    feats: np.ndarray
    labels: np.ndarray
    source: str  # "feature cache" or "computed"


def subsample(n: int, points: int, seed: int = SEED) -> np.ndarray:
    """Sorted indices of a fixed random subset of ``min(points, n)`` of ``range(n)``."""
    if points >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=points, replace=False))


def _cache_entries(run_dirs: list[Path]) -> list[tuple[Path, dict]]:
    """``(path, key parts)`` of every test-split feature cache file under ``run_dirs``."""

    found = []
    for run_dir in run_dirs:
        for path in sorted(Path(run_dir).rglob(f"{FEATURE_CACHE}/*.pt")):
            meta = read_cache_meta(path)
            if meta is not None and meta.get("split") == "test":
                found.append((path, meta))
    return found


def _matches(meta: dict, rec: dict) -> bool:
    """Whether a cache entry holds the features a result record was computed from."""
    bb = meta.get("backbone") or {}
    if rec.get("backbone_sha256"):
        same = bb.get("sha256") == rec["backbone_sha256"]
    else:
        same = bb.get("baseline") == rec.get("backbone")
    features = rec.get("features")
    # raw pixels are stored under whatever features option the evaluation had
    same_features = features == "pixels" or meta.get("features") == features
    data = meta.get("dataset")
    same_data = not isinstance(data, dict) or data.get("dataset", rec.get("dataset")) == rec.get(
        "dataset"
    )
    return same and same_features and same_data


def _computed(rec: dict, model: Any, test: Any, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from torch.utils.data import Subset

    features = "cls" if rec.get("features") == "pixels" else str(rec.get("features", "cls"))
    feats, labels = eval_features.extract_features(
        model, Subset(test, idx.tolist()), features=features, batch_size=256,
        precision=str(rec.get("precision", "bf16")),  # as the evaluation extracted them
    )  # fmt: skip
    return feats.numpy(), labels.numpy()


def map_inputs(
    rows: list[dict],
    run_dirs: list[Path],
    data_cfg: Any = None,
    backbones: dict[str, Any] | None = None,
    points: int = MAP_POINTS,
) -> list[MapInput]:
    """One :class:`MapInput` per model of the results table (the first features it reports).

    Features come from the evaluation's cache under ``run_dirs``; else they are computed on
    the subsample from ``backbones[name]`` or the weights file the result names (raw pixels
    too), on ``data_cfg``'s test split. Models with neither are left out (logged).
    """

    entries = _cache_entries(run_dirs)
    test, done, out = None, set(), []
    for (_, name, _features, _), recs in group_models(rows):
        if name in done:
            continue
        done.add(name)
        rec = next(iter(recs.values()))
        hit = next((p for p, meta in entries if _matches(meta, rec)), None)
        loaded = load_features(hit) if hit is not None else None
        if loaded is not None:
            feats, labels = loaded
            idx = subsample(len(feats), points)
            out.append(
                MapInput(name, rec["features"], feats[idx].float().numpy(),
                         labels[idx].numpy(), "feature cache")
            )  # fmt: skip
            continue
        model = (backbones or {}).get(name) or _model_of(rec)
        if model is None or data_cfg is None:
            log.info("feature map: no cached test features and no model or data for %s", name)
            continue
        try:
            if test is None:
                test = load_split(data_cfg, "test")
            idx = subsample(len(test), points)
            feats, labels = _computed(rec, model, test, idx)
        except Exception as exc:  # a report must not fail on one backbone
            log.warning("feature map: cannot compute features of %s: %s", name, exc)
            continue
        out.append(MapInput(name, rec["features"], feats, labels, "computed"))
    return out


def _model_of(rec: dict) -> Any:
    """The backbone a result names, when it can be rebuilt (a file, or raw pixels)."""

    if rec.get("backbone") == RAW_PIXELS:
        return RawPixels()
    path = Path(str(rec.get("backbone", "")))
    if rec.get("backbone_sha256") is None or not path.is_file():
        return None
    try:
        return load_backbone(path)
    except Exception as exc:
        log.warning("feature map: cannot load %s: %s", path, exc)
        return None


def tsne_2d(feats: np.ndarray, seed: int = SEED) -> np.ndarray:
    """A 2-D t-SNE layout of ``feats [n, D]`` (scikit-learn, Barnes-Hut): ``[n, 2]``."""
    from sklearn.manifold import TSNE

    n = len(feats)
    perplexity = min(30.0, max(1.0, (n - 1) / 3))  # sklearn needs perplexity < n
    tsne = TSNE(
        n_components=2, perplexity=perplexity, init="pca", max_iter=TSNE_ITERS,
        random_state=seed, n_jobs=-1,
    )  # fmt: skip
    return tsne.fit_transform(np.nan_to_num(feats.astype(np.float32)))


def plot_feature_maps(
    inputs: list[MapInput], path: Path, class_names: list[str] | None = None
) -> Path:
    """One t-SNE panel per backbone (points coloured by class) in a grid, one class legend."""
    cols = min(4, len(inputs))
    rows = math.ceil(len(inputs) / cols)
    fig = Figure(figsize=(3.2 * cols, 3.2 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    classes = sorted({int(c) for m in inputs for c in m.labels})

    palette = colormaps["tab10" if len(classes) <= 10 else "tab20"]
    colour = {c: palette(i % palette.N) for i, c in enumerate(classes)}
    for ax, m in zip(axes, inputs):
        t0 = time.perf_counter()
        xy = tsne_2d(m.feats)
        log.info(
            "feature map %s: t-SNE of %d points in %.1f s",
            m.name,
            len(xy),
            time.perf_counter() - t0,
        )
        ax.scatter(xy[:, 0], xy[:, 1], s=2, c=[colour[int(c)] for c in m.labels], linewidths=0)
        ax.set_title(f"{m.name} ({m.features})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(inputs) :]:
        ax.set_visible(False)

    def label(c: int) -> str:
        if class_names and 0 <= c < len(class_names):
            return class_names[c]
        return "unlabelled" if c < 0 else f"class {c}"

    handles = [
        Line2D([], [], marker="o", linestyle="", color=colour[c], label=label(c)) for c in classes
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 5),
               frameon=False, fontsize=8)  # fmt: skip
    return save_figure(fig, path)


def class_names_of(data_cfg: Any) -> list[str] | None:
    """Class names of a data config (Fashion-MNIST's, or a folder's class sub-folders)."""
    try:
        if is_fashion_mnist(data_cfg):
            return list(CLASSES)

        return class_names(dataset_dir(data_cfg.dataset)) or None
    except Exception:  # names are a nicety: the legend falls back to class numbers
        return None


def feature_map(
    rows: list[dict],
    run_dirs: list[Path],
    path: Path,
    data_cfg: Any = None,
    backbones: dict[str, Any] | None = None,
    points: int = MAP_POINTS,
) -> tuple[Path, list[MapInput]] | None:
    """Draw ``path`` (see :func:`map_inputs`); ``None`` when no backbone has features."""
    inputs = map_inputs(rows, run_dirs, data_cfg, backbones, points)
    if not inputs:
        return None
    datasets = {str(r.get("dataset")) for r in rows}
    names = None
    if data_cfg is not None:
        names = class_names_of(data_cfg) if datasets == {dataset_name(data_cfg)} else None
    return plot_feature_maps(inputs, path, names), inputs
