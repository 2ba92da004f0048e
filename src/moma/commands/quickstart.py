"""``moma quickstart``: MOMA's comparison end to end on Fashion-MNIST (32 px, patch 4).

Stages: pre-train an MAE and a MoCo v3 teacher; compute each teacher's targets once on
``cache_views`` views of every image (the teacher-target cache, shared by every mechanism
that distils from that teacher); distil the paper's three mechanisms (MoCo v3 ->
MAE-initialised student, MAE -> MoCo-v3-initialised student, both -> a smaller random
student) on those targets; evaluate every backbone plus raw-pixel and random-init baselines
(kNN and linear probe); write ``OUT/report.md`` and plots. Re-running the same command skips
finished stages and resumes an interrupted one (training stages resume from their last
checkpoint).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from moma.commands.distill import (
    MomaRunConfig,
    StudentConfig,
    TeacherConfig,
    build_target_cache,
    run_moma,
)
from moma.commands.pretrain import MAERunConfig, MoCoV3RunConfig, run_mae, run_mocov3
from moma.commands.quickstart_eta import Reference, RunEta, fmt_duration
from moma.commands.record import config_to_dict
from moma.data import DataConfig
from moma.errors import ConfigError
from moma.eval.run import run_eval
from moma.methods.mocov3 import mocov3_optim
from moma.methods.moma_config import CacheConfig
from moma.methods.optim import OptimConfig
from moma.models.vit import BackboneConfig
from moma.paths import output_folder
from moma.report.build import build_report
from moma.report.gather import load_results
from moma.report.table import format_table
from moma.report.verdict import beat_sentence
from moma.run_folder import atomic_write_text
from moma.train import RunResult, TrainerConfig
from moma.validation import prepare_run

log = logging.getLogger(__name__)


@dataclass
class Budget:
    """How much compute each stage gets. Distillation gets fewer steps than pre-training."""

    mae_steps: int
    mocov3_steps: int  # a MoCo v3 step costs ~6x an MAE step (two full views + momentum)
    distill_epochs: int  # epochs of each distillation over the cached targets
    cache_views: int  # cached views per image (each teacher runs once per image per view)
    batch_size: int
    train_subset: int | None  # training images used for pre-training and distillation
    eval_subset: int | None  # training images in the kNN bank / linear-probe training set
    teacher: BackboneConfig
    student_small: BackboneConfig  # the compact random-init student of mechanism 3
    linear_epochs: int
    knn_k: list[int]
    ckpt_every_n_steps: int = 100
    distill_steps: int = -1  # > 0: this many steps instead of distill_epochs (smoke runs)
    map_points: int = 2000  # test images in the report's t-SNE map of each backbone


def _vit(depth: int, dim: int, heads: int) -> BackboneConfig:
    # 32 px: Fashion-MNIST zero-padded, 8x8 patch-4 tokens. Its own 28 px (7x7 tokens) costs
    # less per step but learned less in the same steps (RESULTS.md, "Fitting 30 minutes...").
    return BackboneConfig(
        arch="vit_tiny_patch16_224", img_size=32, patch_size=4, depth=depth,
        embed_dim=dim, num_heads=heads,
    )  # fmt: skip


BUDGETS: dict[str, Budget] = {
    # CI-sized: proves every stage runs; accuracies are not meaningful.
    "smoke": Budget(
        mae_steps=30, mocov3_steps=15, distill_epochs=1, distill_steps=20, cache_views=1,
        batch_size=64, train_subset=4096,
        eval_subset=4096, teacher=_vit(2, 64, 2), student_small=_vit(2, 48, 2),
        linear_epochs=5, knn_k=[20, 200], ckpt_every_n_steps=10, map_points=500,
    ),
    # 22m04s on 2 idle Zen 5 cores, 39m34s on Zen 4 (RESULTS.md); 6x192 teachers, a
    # 4x192 compact student; 10 epochs was the most distillation that fit in 30 minutes on Zen 5.
    "default": Budget(
        mae_steps=600, mocov3_steps=110, distill_epochs=10, cache_views=2, batch_size=256,
        train_subset=None,
        eval_subset=20000, teacher=_vit(6, 192, 3), student_small=_vit(4, 192, 3),
        linear_epochs=30, knn_k=[20, 200],
    ),
    # Real results within 2 hours on the slower of the 2-core machine kinds we have met
    # (measured 1h36m52s on a Zen 4, whose steps take 2.1x those of a Zen 5; RESULTS.md): the
    # default's models with 3.3x the MAE and 2.7x the MoCo v3 steps, twice the distillation
    # epochs over twice the cached views, the full 60k kNN bank. Minutes on a GPU.
    "long": Budget(
        mae_steps=2000, mocov3_steps=300, distill_epochs=20, cache_views=4, batch_size=256,
        train_subset=None, eval_subset=None, teacher=_vit(6, 192, 3),
        student_small=_vit(4, 192, 3), linear_epochs=60, knn_k=[20, 200],
        ckpt_every_n_steps=200,
    ),
}  # fmt: skip

# Stage times measured end to end, for the run-time estimate (`quickstart_eta`): the slower
# machine kind we have met, so that the first estimate errs long.
REFERENCES: dict[str, Reference] = {
    "smoke": Reference(
        "an idle 2-core AMD EPYC Zen 4",
        {"mae": 3.7, "mocov3": 1.9, "targets": 1.5, "moma_mocov3_to_mae": 0.6,
         "moma_mae_to_mocov3": 0.8, "moma_both_to_random": 0.6, "eval": 21.9, "report": 6.8},
    ),
    "default": Reference(
        "an idle 2-core AMD EPYC Zen 4 (RESULTS.md; 22m04s in all on a Zen 5)",
        {"mae": 323.4, "mocov3": 362.0, "targets": 350.3, "moma_mocov3_to_mae": 356.3,
         "moma_mae_to_mocov3": 354.1, "moma_both_to_random": 293.6, "eval": 306.1,
         "report": 20.5},
    ),  # docs/results/default-zen4/stages.json
    "long": Reference(
        "an idle 2-core AMD EPYC Zen 4 (RESULTS.md)",
        {"mae": 1142.5, "mocov3": 984.7, "targets": 743.5, "moma_mocov3_to_mae": 753.8,
         "moma_mae_to_mocov3": 751.6, "moma_both_to_random": 575.9, "eval": 830.7,
         "report": 22.1},
    ),  # docs/results/long/stages.json
}  # fmt: skip


@dataclass
class QuickstartConfig:
    """Options of ``moma quickstart``."""

    budget: Literal["smoke", "default", "long"] = "default"
    out: str = "runs/quickstart"
    precision: str = "bf16-mixed"
    seed: int = 0
    data_root: str | None = None  # Fashion-MNIST folder (default: the Debian package's)
    progress_bar: bool = True
    stages: list[str] = field(default_factory=list)  # run only these (default: all)

    def check(self) -> None:
        """Refuse an unknown stage name, listing the known ones (raises `ConfigError`)."""
        out = Path(self.out)
        known = [*training_stages(self, BUDGETS[self.budget], out, DataConfig()), "eval", "report"]
        unknown = sorted(set(self.stages) - set(known))
        if unknown:
            raise ConfigError(f"stages: unknown stage(s) {unknown}; known: {known}")


class StageLog:
    """``OUT/stages.json``: wall time and images processed of every stage, across re-runs."""

    def __init__(self, out: Path) -> None:
        self.path = out / "stages.json"
        self.data: dict[str, dict] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def done(self, name: str) -> bool:
        return bool(self.data.get(name, {}).get("done"))

    def add(self, name: str, wall: float, done: bool, **info) -> None:
        rec = self.data.setdefault(name, {"wall_time_s": 0.0})
        rec["wall_time_s"] = round(rec["wall_time_s"] + wall, 2)
        rec.update(info, done=done)
        atomic_write_text(self.path, json.dumps(self.data, indent=2))


def _trainer(cfg: QuickstartConfig, b: Budget, out: Path, steps: int, epochs: int = 1):
    return TrainerConfig(
        out_dir=str(out), max_steps=steps, max_epochs=epochs, precision=cfg.precision,
        seed=cfg.seed, ckpt_every_n_steps=b.ckpt_every_n_steps, progress_bar=cfg.progress_bar,
        log_every_n_steps=10,
    )  # fmt: skip


# The mechanisms: student stage -> (what it distils from, the model it starts from).
MECHANISMS = {
    "moma_mocov3_to_mae": (["mocov3"], "mae"),
    "moma_mae_to_mocov3": (["mae"], "mocov3"),
    "moma_both_to_random": (["mocov3", "mae"], None),
}


def training_stages(cfg: QuickstartConfig, b: Budget, out: Path, data: DataConfig) -> dict:
    """name -> (role, run config builder, run function) of the training stages: the two
    teachers, the teacher-target cache (``targets``) and the three mechanisms.

    Learning rates are raised from the papers' base_lr (set for batches of 4096 and hundreds
    of epochs) because these runs are short: lr = base_lr * 256 / 256.
    """
    mae_w = str(out / "mae" / "backbone.safetensors")
    moco_w = str(out / "mocov3" / "backbone.safetensors")
    # One store per teacher under OUT/targets, shared by every mechanism using that teacher.
    cache = CacheConfig(views=b.cache_views, dir=str(out / "targets"))

    def distill(name: str, teachers: list[TeacherConfig], student: StudentConfig):
        # A pre-trained student starts closer to its targets than a random one.
        lr = 1e-3 if student.init == "random" else 5e-4
        return lambda: MomaRunConfig(
            data=data, teachers=teachers, student=student, optim=OptimConfig(base_lr=lr),
            trainer=_trainer(cfg, b, out / name, b.distill_steps, b.distill_epochs),
            cache=cache,
        )  # fmt: skip

    both = [TeacherConfig(path=moco_w, name="mocov3"), TeacherConfig(path=mae_w, name="mae")]
    both_to_random = distill(
        "moma_both_to_random", both, StudentConfig(init="random", backbone=b.student_small)
    )

    return {
        "mae": ("teacher", lambda: MAERunConfig(
            data=data, backbone=b.teacher, optim=OptimConfig(base_lr=1.5e-3),
            trainer=_trainer(cfg, b, out / "mae", b.mae_steps),
        ), run_mae),
        "mocov3": ("teacher", lambda: MoCoV3RunConfig(
            data=data, backbone=b.teacher,
            optim=dataclasses.replace(mocov3_optim(), base_lr=1e-3, warmup_fraction=0.1),
            trainer=_trainer(cfg, b, out / "mocov3", b.mocov3_steps),
        ), run_mocov3),
        # The teachers' targets, computed once for all three mechanisms (mechanism 3 has
        # both teachers; a store does not depend on the student).
        "targets": ("cache", both_to_random, build_target_cache),
        "moma_mocov3_to_mae": ("student", distill(
            "moma_mocov3_to_mae", [TeacherConfig(path=moco_w, name="mocov3")],
            StudentConfig(init=mae_w),
        ), run_moma),
        "moma_mae_to_mocov3": ("student", distill(
            "moma_mae_to_mocov3", [TeacherConfig(path=mae_w, name="mae")],
            StudentConfig(init=moco_w),
        ), run_moma),
        "moma_both_to_random": ("student", both_to_random, run_moma),
    }  # fmt: skip


def run_quickstart(cfg: QuickstartConfig) -> Path | RunResult:
    """Run (or resume) every stage and write ``OUT/report.md``; returns its path.

    When a training stage is stopped by SIGTERM/SIGINT (after saving its checkpoint) the
    stage's :class:`~moma.train.RunResult` is returned instead and later stages do not run.
    """
    cfg = prepare_run(cfg)
    if cfg.budget not in BUDGETS:
        raise ConfigError(f"--budget must be one of {sorted(BUDGETS)}, got {cfg.budget!r}")
    b = BUDGETS[cfg.budget]
    out = output_folder(cfg.out, "out")
    out.mkdir(parents=True, exist_ok=True)
    stages = StageLog(out)
    data = DataConfig(
        root=cfg.data_root,
        img_size=b.teacher.img_size,
        batch_size=b.batch_size,
        subset=b.train_subset,
        seed=cfg.seed,
    )
    train = training_stages(cfg, b, out, data)
    names = [*train, "eval", "report"]
    wanted = cfg.stages or names
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        raise ConfigError(f"--stages: unknown stage(s) {unknown}; known: {names}")
    todo = [n for n in names if n in wanted and not (stages.done(n) and n != "report")]
    eta = RunEta(REFERENCES[cfg.budget], todo) if cfg.budget in REFERENCES else None
    if eta is not None:
        log.info("[eta] %s", eta.before())
    t_all = time.perf_counter()
    for i, name in enumerate(names, 1):
        if name not in wanted:
            continue
        tag = f"[{i}/{len(names)}] {name}"
        if name not in todo:
            log.info("%s: done earlier, skipped", tag)
            continue
        t0 = time.perf_counter()
        if name in train and train[name][0] == "cache":
            _, make, build = train[name]
            run_cfg = make()
            records = build(run_cfg)
            wall = time.perf_counter() - t0
            images = sum(r["store"].layout.num_images * r["store"].layout.views for r in records)
            stages.add(
                name, wall, done=True, role="cache", steps=0, images_processed=images,
                teachers=[r["teacher"] for r in records], views=b.cache_views,
                config=config_to_dict(run_cfg),
            )  # fmt: skip
            log.info("%s: finished in %s (%d teacher forwards)", tag, fmt_duration(wall), images)
        elif name in train:
            role, make, run = train[name]
            run_cfg = make()
            res = run(run_cfg)
            wall = time.perf_counter() - t0
            images = res.global_step * b.batch_size
            stages.add(
                name, wall, done=not res.interrupted, role=role, steps=res.global_step,
                images_processed=images, config=config_to_dict(run_cfg),
            )  # fmt: skip
            if res.interrupted:
                log.warning("%s interrupted; re-run the same command to resume", tag)
                return res  # the CLI reports the signal and exits 128 + signal
            log.info(
                "%s: finished in %s (%d steps, %d images)",
                tag,
                fmt_duration(wall),
                res.global_step,
                images,
            )
        elif name == "eval":
            n = run_evals(cfg, b, out, data, train)
            stages.add(name, time.perf_counter() - t0, done=True, evaluations=n)
            log.info(
                "%s: finished in %s (%d evaluations)",
                tag,
                fmt_duration(time.perf_counter() - t0),
                n,
            )
        else:
            report = write_report(cfg, b, out, stages)
            stages.add(name, time.perf_counter() - t0, done=True)
            log.info("%s: %s written", tag, report)
        line = eta.after(name, time.perf_counter() - t0) if eta is not None else None
        if line:
            log.info("[eta] %s", line)
    log.info(
        "quickstart (%s) finished in %s; report: %s",
        cfg.budget,
        fmt_duration(time.perf_counter() - t_all),
        out / "report.md",
    )
    return out / "report.md"


def run_evals(cfg: QuickstartConfig, b: Budget, out: Path, data: DataConfig, train: dict) -> int:
    """kNN and linear probe of baselines, teachers and students (finished ones are skipped)."""
    eval_dir = out / "eval"
    data = dataclasses.replace(data, subset=b.eval_subset)
    models: list[tuple[str, str, str, BackboneConfig | None]] = [
        ("raw-pixels", "raw-pixels", "baseline", None),
        ("random-init", "random-init", "baseline", b.teacher),
    ]
    for name, (role, _, _) in train.items():
        if role in ("teacher", "student"):
            models.append((name, str(out / name / "backbone.safetensors"), role, None))
    n = 0
    for name, spec, role, bb_cfg in models:
        for protocol in ("knn", "linear"):
            label = f"knn-k{b.knn_k[0]}" if protocol == "knn" else "linear"
            if (eval_dir / "results" / f"{label}-{name}.json").exists():
                continue
            overrides = {"k": b.knn_k} if protocol == "knn" else {"epochs": b.linear_epochs}
            recs = run_eval(
                protocol, spec, data, eval_dir, name, role, backbone_cfg=bb_cfg, seed=cfg.seed,
                extras=_compute_extras(out, name), **overrides,
            )  # fmt: skip
            for label, rec in recs.items():
                log.info("  %-22s %-9s %.2f%%", name, label, rec["value"])
            n += 1
    return n


def _compute_extras(out: Path, name: str) -> dict:
    """The training compute of a model, shown next to its accuracy in the report."""
    stages = StageLog(out).data.get(name)
    if not stages:
        return {}
    return {
        "train_images": stages.get("images_processed"),
        "train_wall_s": stages.get("wall_time_s"),
    }


def verdict_lines(rows: list[dict], b: Budget) -> list[str]:
    """One sentence per mechanism: did its student beat both pre-trained models it learned
    from (its teacher(s), and the model it started from) on kNN and the linear probe?"""
    protocols = [f"knn-k{b.knn_k[0]}", "linear"]
    lines = []
    for student, (teachers, start) in MECHANISMS.items():
        if start is None:
            text = beat_sentence(rows, student, teachers, protocols)
        else:
            who = f"its teacher ({teachers[0]}) and its starting point ({start})"
            text = beat_sentence(rows, student, [*teachers, start], protocols, who)
        lines.append(f"- {text}" if text else f"- **{student}**: no results yet.")
    return lines


def write_report(cfg: QuickstartConfig, b: Budget, out: Path, stages: StageLog) -> Path:
    """``OUT/report.md``: the results table with one verdict per mechanism under it, the
    plots, then the stage costs and settings."""
    rows = load_results([out])  # read once: the verdict and the printed table use the same rows
    verdict = ["### Did the students beat their teachers?", ""]
    verdict += verdict_lines(rows, b)
    path = build_report(
        [out],
        out,
        title=f"moma quickstart ({cfg.budget})",
        data_cfg=DataConfig(root=cfg.data_root, img_size=b.teacher.img_size),
        map_points=b.map_points,
        summary=verdict,
    )  # data_cfg: test images for the CLS attention maps
    lines = ["", "## Stages (compute)", "", "| stage | steps | images processed | wall time |",
             "| --- | ---: | ---: | ---: |"]  # fmt: skip
    for name, rec in stages.data.items():
        lines.append(
            f"| {name} | {rec.get('steps', '')} | {rec.get('images_processed', '')} | "
            f"{fmt_duration(rec.get('wall_time_s', 0.0))} |"
        )
    settings = dataclasses.asdict(b)
    lines += ["", "## Settings", "", f"budget `{cfg.budget}`, precision `{cfg.precision}`, seed {cfg.seed}",
              "", "```json", json.dumps(settings, indent=1), "```", ""]  # fmt: skip
    with open(path, "a") as f:
        f.write("\n".join(lines))
    sys.stdout.write(format_table(rows) + "\n")
    return path
