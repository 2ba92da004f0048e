"""Ablation of MOMA's distillation defaults at a fixed budget.

Uses the teachers a quickstart run made (``QS/mae`` and ``QS/mocov3`` exports) and
distils them (``--teacher both``: mechanism 3; or one of them) into a random 4x192 student
with one option changed at a time from the defaults, once per seed. Each run is evaluated
with kNN (k=20) and a linear probe; the table gives mean +- std over seeds and each run's
cost (the teacher-target cache's build, when there is one, and the training).

    python benchmarks/ablate_distill.py --teachers runs/quickstart --steps 300 --seeds 0 1 2
    python benchmarks/ablate_distill.py --teachers runs/quickstart --set cache --epochs 6 \
        --seeds 0 1 --eval-subset 20000

Variant sets: ``defaults`` (the MOMA options, issue 6) and ``cache`` (the number of cached
views ``K`` at a fixed number of epochs; ``K = epochs`` sees as many distinct views as an
uncached run, a fresh one per epoch, at the same teacher cost), ``lr`` and ``mask``.
A variant's options are dotted keys of the distill config (``moma.mask_ratio``,
``cache.views``, ``optim.base_lr``, ``trainer.max_epochs``, ...).

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

from moma.commands.distill import MomaRunConfig, StudentConfig, TeacherConfig, run_moma
from moma.data import DataConfig
from moma.eval.run import run_eval
from moma.methods.moma_config import CacheConfig
from moma.methods.optim import OptimConfig
from moma.models.vit import BackboneConfig
from moma.train import TrainerConfig

log = logging.getLogger("ablation")

# set -> variant name -> the options changed from the defaults (dotted config keys)
VARIANT_SETS: dict[str, dict[str, dict]] = {
    "defaults": {
        "default": {},
        "mask 0.75": {"moma.mask_ratio": 0.75},
        "mask 0.95": {"moma.mask_ratio": 0.95},
        "targets cls+patch": {"moma.targets": "cls+patch"},  # the default until issue 6
        "targets patch": {"moma.targets": "patch"},
        "norm l2": {"moma.target_norm": "l2"},
        "loss cosine": {"moma.loss": "cosine"},
    },
    "cache": {
        "K=1": {"cache.views": 1},
        "K=2": {"cache.views": 2},
        "K=epochs": {"cache.views": "epochs"},  # as many views as an uncached run sees
    },
    "lr": {
        "lr 1e-3": {"cache.views": 2},
        "lr 2e-3": {"cache.views": 2, "optim.base_lr": 2e-3},
        "lr 5e-4": {"cache.views": 2, "optim.base_lr": 5e-4},
    },
    "mask": {
        "mask 0.9": {"cache.views": 2},
        "mask 0.75": {"cache.views": 2, "moma.mask_ratio": 0.75},
        "mask 0.95": {"cache.views": 2, "moma.mask_ratio": 0.95},
    },
}


def apply(cfg: MomaRunConfig, changes: dict, epochs: int) -> MomaRunConfig:
    """``cfg`` with the dotted ``changes`` applied (``"epochs"`` means the run's epochs)."""
    for dotted, value in changes.items():
        node = cfg
        *path, last = dotted.split(".")
        for part in path:
            node = getattr(node, part)
        setattr(node, last, epochs if value == "epochs" else value)
    return cfg


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
        optim=OptimConfig(base_lr=1e-3),  # the quickstart's lr for random students
        trainer=TrainerConfig(
            out_dir=str(out), max_steps=-1 if args.epochs else args.steps,
            max_epochs=args.epochs or 1, seed=seed, progress_bar=False,
            ckpt_every_n_steps=1000, precision=args.precision,
        ),
        cache=CacheConfig(dir=str(Path(args.work or args.out) / "targets")),
    )  # fmt: skip
    cfg = apply(cfg, changes, args.epochs)
    t0 = time.perf_counter()
    res = run_moma(cfg)
    total_s = time.perf_counter() - t0
    cache = out / "target_cache.json"
    build_s = json.loads(cache.read_text())["seconds"] if cache.exists() else 0.0
    rec = {
        "variant": name,
        "changes": changes,
        "seed": seed,
        "steps": res.global_step,
        "cache_build_s": round(build_s, 1),
        "train_s": round(total_s - build_s, 1),
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
        f"Teacher(s) {args.teacher} -> random 4x192 student, "
        f"{f'{args.epochs} epochs' if args.epochs else f'{args.steps} steps'} x batch "
        f"{args.batch_size}, precision {args.precision}, seeds {seeds}; kNN bank / probe set "
        f"{args.eval_subset or 60000} training images, full test split; one option changed "
        "from the defaults per row; mean +- sample std over seeds.",
        "",
        "| variant | change | kNN k=20 top-1 (%) | linear top-1 (%) | cache build / run (s) "
        "| train time / run (s) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for name in VARIANT_SETS[args.set]:
        mine = [r for r in rows if r["variant"] == name]
        if not mine:
            continue
        change = ", ".join(f"{k}={v}" for k, v in mine[0]["changes"].items()) or "defaults"
        train_s = statistics.mean(r["train_s"] for r in mine)
        build_s = statistics.mean(r.get("cache_build_s", 0.0) for r in mine)
        lines.append(
            f"| {name} | {change} | {_mean_std([r['knn_k20'] for r in mine])} | "
            f"{_mean_std([r['linear'] for r in mine])} | {build_s:.0f} | {train_s:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teachers", required=True, help="a quickstart output folder")
    p.add_argument("--out", default="runs/ablation", help="where the table and JSON go")
    p.add_argument("--work", default=None, help="where the runs go (default: --out)")
    p.add_argument("--set", choices=list(VARIANT_SETS), default="defaults")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--epochs", type=int, default=0, help="train for epochs instead of --steps")
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
        for name, changes in VARIANT_SETS[args.set].items():
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
