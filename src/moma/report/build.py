"""``build_report``: one Markdown report with the results table and figures."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from pathlib import Path
from typing import Any

from torch import Tensor

from moma.data import load_split
from moma.eval.features import iterate_batches
from moma.models.checkpoint import load_backbone
from moma.report.attention import attention_maps
from moma.report.feature_map import feature_map
from moma.report.gather import find_loss_curves, find_reconstructions, load_results
from moma.report.plots import plot_accuracy, plot_losses
from moma.report.table import format_table

log = logging.getLogger(__name__)

NOTES = (
    "Top-1 accuracy (%) on the test split. kNN: weighted cosine vote (T = 0.07) over "
    "L2-normalised frozen features, train split as the bank. Linear: BatchNorm (no affine) + "
    "linear layer on frozen features. Fine-tune: all weights, layer-wise lr decay. "
    "Features: `cls` = final-norm CLS token, `mean` = mean of final-norm patch tokens; "
    "`pixels` = the flattened normalised image (raw-pixel baseline)."
)


def _backbones_from_results(rows: list[dict]) -> dict[str, Any]:
    """Load each non-baseline backbone file named by the results (for attention maps)."""

    out: dict[str, Any] = {}
    for r in rows:
        path = Path(str(r.get("backbone", "")))
        name = str(r.get("name", path.stem))
        if name in out or r.get("backbone_sha256") is None or not path.is_file():
            continue
        try:
            out[name] = load_backbone(path)
        except Exception as exc:  # a report must not fail on one unloadable file
            log.warning("attention maps: cannot load %s: %s", path, exc)
    return out


def build_report(
    run_dirs: list[Path],
    out_dir: Path,
    title: str = "moma evaluation report",
    backbones: dict[str, Any] | None = None,
    images: Tensor | None = None,
    data_cfg: Any = None,
    num_images: int = 4,
    feature_map: bool = True,
    map_points: int = 2000,
    summary: list[str] | None = None,
) -> Path:
    """Gather ``results/*.json`` and CSV logs under ``run_dirs`` into ``out_dir/report.md``.

    Writes next to it: ``accuracy.png`` (bars per model and protocol, colour = role),
    ``loss_curves.png`` (when ``metrics.csv`` logs exist), copies of MAE reconstruction
    PNGs under ``figures/``, and ``attention_maps.png`` when images are available
    (``images``, or the first ``num_images`` test images of ``data_cfg``) for ``backbones``
    (default: every backbone file named by a result). With ``feature_map``, ``feature_maps.png``
    next to the table: a t-SNE of each model's features on ``map_points`` test images
    (:mod:`moma.report.feature_map`; from the evaluation's feature cache when it is under
    ``run_dirs``, else computed on ``data_cfg``'s test split). ``summary``: Markdown lines
    placed right under the table (the quickstart's verdict per mechanism). Returns the path
    of ``report.md``.
    """
    run_dirs = [Path(d) for d in run_dirs]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = load_results(run_dirs)
    stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    md = [f"# {title}", "", f"_Generated {stamp} from {len(rows)} result(s)._", ""]
    md += ["## Results", "", format_table(rows), NOTES, ""]
    md += [*summary, ""] if summary else []
    if rows and feature_map:
        md += _feature_map_section(rows, run_dirs, out_dir, data_cfg, backbones, map_points)
    figures: list[tuple[str, str]] = []
    if rows:
        datasets = sorted({str(r.get("dataset")) for r in rows})
        p = plot_accuracy(
            rows, out_dir / "accuracy.png", f"{title}: top-1 accuracy ({', '.join(datasets)})"
        )
        figures.append(("Top-1 accuracy per model and protocol", p.name))
    curves = find_loss_curves(run_dirs)
    if curves:
        p = plot_losses(curves, out_dir / "loss_curves.png", "Training loss per run")
        figures.append(("Training loss", p.name))
    for run, src in find_reconstructions(run_dirs):
        dst = out_dir / "figures" / f"{run}-{src.name}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.resolve() != dst.resolve():
            shutil.copyfile(src, dst)
        figures.append((f"MAE reconstructions ({run})", str(dst.relative_to(out_dir))))
    if images is None and data_cfg is not None:
        images = _first_images(data_cfg, num_images)
    if images is not None:
        nets = backbones if backbones is not None else _backbones_from_results(rows)
        if nets:
            p = attention_maps(nets, images[:num_images], out_dir / "attention_maps.png")
            figures.append(("CLS attention maps (last block, mean over heads)", p.name))
    if figures:
        md += ["## Figures", ""]
        for caption, rel in figures:
            md += [f"### {caption}", "", f"![{caption}]({rel})", ""]
    if rows:
        md += ["## Sources", ""] + [f"- `{r['_source']}`" for r in rows] + [""]
    path = out_dir / "report.md"
    tmp = path.with_name(".report.md.tmp")
    tmp.write_text("\n".join(md))
    tmp.replace(path)
    log.info("report written to %s", path)
    return path


def _feature_map_section(
    rows: list[dict],
    run_dirs: list[Path],
    out_dir: Path,
    data_cfg: Any,
    backbones: dict[str, Any] | None,
    points: int,
) -> list[str]:
    """The Markdown of the feature-map figure (empty when it cannot be drawn)."""

    try:
        drawn = feature_map(
            rows, run_dirs, out_dir / "feature_maps.png", data_cfg, backbones, points
        )
    except Exception as exc:  # the figure is optional: the table must still be written
        log.warning("feature map: not drawn: %s", exc)
        return []
    if drawn is None:
        return []
    path, inputs = drawn
    n = max(len(m.labels) for m in inputs)
    said = {"feature cache": "the evaluation's feature cache", "computed": "a forward pass"}
    sources = sorted({said[m.source] for m in inputs})
    caption = "Test features in 2-D (t-SNE), coloured by class"
    return [
        f"### {caption}",
        "",
        f"![{caption}]({path.name})",
        "",
        f"_{n} test images (the same for every model); features from "
        f"{' and '.join(sources)}; scikit-learn t-SNE, perplexity 30._",
        "",
    ]


def _first_images(data_cfg: Any, n: int) -> Tensor | None:
    """The first ``n`` test images of a data config (``None`` if the data cannot be read)."""
    try:
        images, _ = next(iterate_batches(load_split(data_cfg, "test"), n))
        return images
    except Exception as exc:  # the figure is optional
        log.warning("attention maps: cannot read test images: %s", exc)
        return None
