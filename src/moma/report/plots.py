"""matplotlib figures (Agg, no pyplot state): accuracy bars and training-loss curves."""

from __future__ import annotations

import logging
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.patches import Patch

from moma.report.gather import LossCurve
from moma.report.table import ROLE_ORDER, group_models, protocols_of

log = logging.getLogger(__name__)

ROLE_COLOURS = {"baseline": "#8c8c8c", "teacher": "#1f77b4", "student": "#ff7f0e"}
OTHER_COLOUR = "#2ca02c"
DPI = 120


def save_figure(fig: Figure, path: Path) -> Path:
    """Save a figure as PNG (tight bounding box)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def plot_accuracy(rows: list[dict], path: Path, title: str = "Top-1 accuracy") -> Path:
    """One panel per protocol, one horizontal bar per model (colour = role), values in %."""
    protocols = protocols_of(rows)
    models = group_models(rows)
    datasets = {key[3] for key, _ in models}
    labels = [
        f"{name} ({features})" + (f" [{dataset}]" if len(datasets) > 1 else "")
        for (_, name, features, dataset), _ in models
    ]
    n = max(1, len(models))
    fig = Figure(
        figsize=(max(6.0, 3.6 * len(protocols) + 2.0), 1.8 + 0.42 * n), layout="constrained"
    )
    axes = fig.subplots(1, len(protocols), sharey=True, squeeze=False)[0]
    ypos = list(range(n))[::-1]  # first model at the top
    for ax, proto in zip(axes, protocols):
        for y, ((role, *_), recs) in zip(ypos, models):
            colour = ROLE_COLOURS.get(role, OTHER_COLOUR)
            if proto in recs:
                v = float(recs[proto]["value"])
                ax.barh(y, v, color=colour, height=0.7)
                ax.text(v + 1, y, f"{v:.1f}", va="center", fontsize=8)
            else:
                ax.text(1, y, "n/a", va="center", fontsize=8, color="#999999")
        ax.set_xlim(0, 110)
        ax.set_title(proto)
        ax.set_xlabel("top-1 accuracy (%)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(ypos)
    axes[0].set_yticklabels(labels)
    roles = [r for r in ROLE_ORDER if any(key[0] == r for key, _ in models)]
    handles = [Patch(color=ROLE_COLOURS[r], label=r) for r in roles]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_losses(curves: list[LossCurve], path: Path, title: str = "Training loss") -> Path:
    """Training loss vs optimiser step, one line per run (log scale when all positive)."""
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    for c in curves:
        ax.plot(c.steps, c.losses, label=f"{c.label} ({c.column})", linewidth=1.2)
    if curves and all(v > 0 for c in curves for v in c.losses):
        ax.set_yscale("log")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("training loss (log scale)" if ax.get_yscale() == "log" else "training loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    return save_figure(fig, path)
