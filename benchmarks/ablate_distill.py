"""Ablation of MOMA's distillation defaults at a fixed budget (issue 6).

Uses the teachers a quickstart run made (``QS/mae`` and ``QS/mocov3`` exports) and
distils them (``--teacher both``: mechanism 3; or one of them) into a random 4x192 student
with one option changed at a time from ``MomaConfig()``'s defaults, once per seed. Each
run is evaluated with kNN (k=20) and a linear probe; the table gives mean +- std over seeds.

    python benchmarks/ablate_distill.py --teachers runs/quickstart --steps 300 --seeds 0 1 2

Runs on the GPU when one is visible (Lightning's ``accelerator=auto``; the evaluation
too). Resumable: finished (variant, seed) runs are skipped. Writes ``OUT/ablation.md`` (the
table) and ``OUT/ablation.json`` (every run).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import time
from pathlib import Path

from moma.data import DataConfig
from moma.eval.run import run_eval
from moma.methods.moma import MomaConfig, MomaRunConfig, StudentConfig, TeacherConfig, run_moma
from moma.models.vit import BackboneConfig
from moma.train import TrainerConfig

log = logging.getLogger("ablation")

# name -> the options changed from MomaConfig()'s defaults
VARIANTS: dict[str, dict] = {
    "default": {},
    "mask 0.75": {"mask_ratio": 0.75},
    "mask 0.95": {"mask_ratio": 0.95},
    "targets cls+patch": {"targets": "cls+patch"},  # the default until this ablation chose cls
    "targets patch": {"targets": "patch"},
    "norm l2": {"target_norm": "l2"},
    "loss cosine": {"loss": "cosine"},
}


def run_variant(name: str, changes: dict, seed: int, args: argparse.Namespace) -> dict:
    """Distil one variant with one seed, evaluate it, and cache the record on disk."""
    slug = f"{name.replace(' ', '_')}-seed{seed}"
    out = Path(args.work or args.out) / slug
    result = out / "ablation.json"
    if result.exists():
        return json.loads(result.read_text())
    qs = Path(args.teachers)
    data = DataConfig(batch_size=args.batch_size, seed=seed)
    eval_data = dataclasses.replace(data, subset=args.eval_subset)
    names = ["mocov3", "mae"] if args.teacher == "both" else [args.teacher]
    cfg = MomaRunConfig(
        data=data,
        teachers=[
            TeacherConfig(path=str(qs / n / "backbone.safetensors"), name=n) for n in names
        ],
        student=StudentConfig(
            init="random",
            backbone=BackboneConfig(img_size=32, patch_size=4, depth=4, embed_dim=192, num_heads=3),
        ),
        moma=dataclasses.replace(MomaConfig(), **changes),
        trainer=TrainerConfig(
            out_dir=str(out), max_steps=args.steps, seed=seed, progress_bar=False,
            ckpt_every_n_steps=max(args.steps, 100), precision=args.precision,
        ),
    )  # fmt: skip
    t0 = time.perf_counter()
    res = run_moma(cfg)
    train_s = time.perf_counter() - t0
    rec = {
        "variant": name,
        "changes": changes,
        "seed": seed,
        "steps": res.global_step,
        "train_s": round(train_s, 1),
    }
    export = str(out / "backbone.safetensors")
    knn = run_eval("knn", export, eval_data, out, slug, "student", k=[20])
    lin = run_eval("linear", export, eval_data, out, slug, "student", epochs=args.linear_epochs)
    rec["knn_k20"] = knn["knn-k20"]["value"]
    rec["linear"] = lin["linear"]["value"]
    result.write_text(json.dumps(rec, indent=1))
    return rec


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} +- {statistics.stdev(values):.2f}"


def summarise(rows: list[dict], args: argparse.Namespace) -> str:
    """The Markdown table: one line per variant, mean +- std over seeds."""
    seeds = sorted({r["seed"] for r in rows})
    lines = [
        f"Teacher(s) {args.teacher} -> random 4x192 student, {args.steps} steps x batch "
        f"{args.batch_size}, precision {args.precision}, seeds {seeds}; kNN bank / probe set "
        f"{args.eval_subset or 60000} training images, full test split; one option changed "
        "from the defaults per row; mean +- sample std over seeds.",
        "",
        "| variant | change | kNN k=20 top-1 (%) | linear top-1 (%) | train time / run (s) |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for name in VARIANTS:
        mine = [r for r in rows if r["variant"] == name]
        if not mine:
            continue
        change = ", ".join(f"{k}={v}" for k, v in mine[0]["changes"].items()) or "defaults"
        train_s = statistics.mean(r["train_s"] for r in mine)
        lines.append(
            f"| {name} | {change} | {_mean_std([r['knn_k20'] for r in mine])} | "
            f"{_mean_std([r['linear'] for r in mine])} | {train_s:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teachers", required=True, help="a quickstart output folder")
    p.add_argument("--out", default="runs/ablation", help="where the table and JSON go")
    p.add_argument("--work", default=None, help="where the runs go (default: --out)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--linear-epochs", type=int, default=30)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--precision", default="bf16-mixed")
    p.add_argument("--teacher", choices=["both", "mocov3", "mae"], default="both")
    p.add_argument("--eval-subset", type=int, default=None, help="kNN bank / probe train size")
    p.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    # Seed-major order: a run cut short still has every variant at the first seeds.
    for seed in args.seeds:
        for name, changes in VARIANTS.items():
            if args.only and name not in args.only:
                continue
            rows.append(run_variant(name, changes, seed, args))
            r = rows[-1]
            log.info("%s seed %d: kNN %.2f%%, linear %.2f%%", name, seed, r["knn_k20"], r["linear"])
            (out / "ablation.json").write_text(json.dumps(rows, indent=1))
            (out / "ablation.md").write_text(summarise(rows, args))
    print(summarise(rows, args))  # the table is this script's output


if __name__ == "__main__":
    main()
