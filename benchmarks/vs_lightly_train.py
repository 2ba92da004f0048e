"""moma vs LightlyTrain: the same teacher, images and student, at equal wall time.

Both tools distil one moma teacher export (``--teacher``) into the same random student (a
timm ``vit_tiny_patch16_224`` with 6 blocks x 192 dims x 3 heads, patch 4, 32 px images) on
the same folder of PNGs (the first ``--images`` Fashion-MNIST training images, written once,
zero-padded to 32 px; the 10k test images beside them as the labelled held-out split):

1. LightlyTrain (``distillationv1``, its own recipe and defaults) for ``--lightly-epochs``
   epochs, run by ``benchmarks/lightly_train_driver.py`` in LightlyTrain's own environment
   (``--lightly-python``), offline; its wall time is that of the whole ``pretrain`` call.
2. moma (``moma distill`` through ``run_moma``, the quickstart's settings for a random
   student) with the teacher-target cache (``--cache-views K``). Its number of epochs is
   chosen so that its wall time, cache build included, matches LightlyTrain's: a calibration
   run (the cache build and two epochs, in its own folder) gives the build, per-epoch and
   fixed costs; the measured run then builds its own cache again and trains a full schedule
   of that many epochs (the lr schedule always completes; a warning says when the wall times
   still differ by more than 10%).
3. Both students (and the teacher, for reference) are evaluated alike with moma's kNN
   (k=20) and linear probe, bank / probe training set = the same training images, queries =
   the 10k test images, on two features: the final-norm CLS token (what moma distils) and the
   mean of the final-norm patch tokens (what LightlyTrain distils for a timm ViT: its timm
   wrapper average-pools the patch tokens; the CLS token is not trained there).

Writes ``OUT/vs_lightly_train.md`` (the table) and ``OUT/vs_lightly_train.json`` (every
figure, the exact commands, the load average around each timed run). Resumable: finished
parts (data, runs, evaluations) are skipped; a timed run that did not finish is started
over (a resumed run's wall time would mean nothing).

    python benchmarks/vs_lightly_train.py --teacher runs/quickstart/mae/backbone.safetensors \
        --lightly-python /path/to/lt-venv/bin/python --out runs/vs_lightly_train --seeds 0 1 2

The LightlyTrain environment needs ``lightly-train`` and ``timm``; ``LIGHTLY_TRAIN_PYTHON``
can name its python instead of ``--lightly-python``.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from safetensors import safe_open

from moma.commands.distill import MomaRunConfig, StudentConfig, TeacherConfig, run_moma
from moma.data import DataConfig, load_split
from moma.data.splits import dataset_stats, fashion_mnist_split
from moma.errors import ConfigError, MomaError
from moma.eval.run import run_eval
from moma.methods.moma_config import CacheConfig
from moma.methods.optim import OptimConfig
from moma.models.checkpoint import load_backbone, sha256_file
from moma.models.export import export_backbone
from moma.models.vit import BackboneConfig
from moma.run_folder import atomic_write, read_metrics
from moma.train import TrainerConfig

log = logging.getLogger("vs_lightly_train")

ARCH = "vit_tiny_patch16_224"
STUDENT = {"img_size": 32, "patch_size": 4, "depth": 6, "embed_dim": 192, "num_heads": 3}
TEST_IMAGES = 10_000
FEATURES = {"cls": "CLS", "mean": "patch mean"}
TRAINED = {"moma": "cls", "lightly": "mean", "teacher": "cls"}  # the feature each distils
TOOLS = {"moma": "moma distill", "lightly": "LightlyTrain distillationv1", "teacher": "teacher"}
CALIBRATION_EPOCHS = 2
RATIO_TOLERANCE = 0.1  # warn when moma's wall time is off LightlyTrain's by more than this
# Options whose change invalidates what an OUT folder holds (seeds may be added).
SETTINGS = ("images", "lightly_epochs", "cache_views", "batch_size", "precision", "linear_epochs")
DRIVER = Path(__file__).with_name("lightly_train_driver.py")


def write_json(path: Path, obj: dict) -> None:
    text = json.dumps(obj, indent=1)
    atomic_write(path, lambda f: f.write(text.encode()))


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --- data -------------------------------------------------------------------------------


def write_images(folder: Path, images: torch.Tensor, labels: torch.Tensor) -> None:
    """``folder/<label>/<index>.png`` for uint8 ``images [N, 1, 32, 32]``."""
    for i, (img, y) in enumerate(zip(images, labels.tolist())):
        sub = folder / str(y)
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0].numpy(), mode="L").save(sub / f"{i:05d}.png")


def prepare_data(out: Path, n: int, root: str | None) -> Path:
    """``OUT/data-N`` with ``train/`` (the first ``n`` Fashion-MNIST training images) and
    ``test/`` (the test split), class sub-folders, written once (atomically)."""
    folder = out / f"data-{n}"
    if (folder / "images.json").exists():
        return folder
    tmp = out / f"data-{n}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    cfg = DataConfig(root=root, subset=n)
    log.info("writing %d training and %d test images as PNGs to %s", n, TEST_IMAGES, folder)
    for split in ("train", "test"):
        images, labels = fashion_mnist_split(cfg, split)  # uint8 [N, 1, 32, 32], [N]
        write_images(tmp / split, images, labels)
    write_json(tmp / "images.json", {"train": n, "test": TEST_IMAGES, "source": "fashion_mnist"})
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def data_config(folder: Path, args: argparse.Namespace, seed: int) -> DataConfig:
    # in RAM: what moma does by itself up to 20k images, and what its target cache needs
    return DataConfig(dataset=str(folder), batch_size=args.batch_size, in_memory=True, seed=seed)


# --- the two tools ----------------------------------------------------------------------


def check_teacher(path: str) -> Path:
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise ConfigError(f"--teacher {path}: no such file")
    try:
        with safe_open(str(p), "pt") as f:
            ok = "moma" in (f.metadata() or {})
    except Exception as err:  # safetensors raises its own error types
        raise ConfigError(f"--teacher {path}: not a safetensors file ({err})") from None
    if not ok:
        raise ConfigError(
            f"--teacher {path}: not a moma export (write one with `moma export --checkpoint ...`)"
        )
    return p


def check_lightly_python(python: str | None) -> str:
    if not python:
        raise ConfigError("--lightly-python is required (or set LIGHTLY_TRAIN_PYTHON)")
    try:
        got = subprocess.run(
            [python, "-c", "import lightly_train, timm; print(lightly_train.__version__)"],
            capture_output=True,
            text=True,
        )
    except OSError as err:
        raise ConfigError(f"--lightly-python {python}: cannot run it ({err})") from None
    if got.returncode != 0:
        last = (got.stderr.strip().splitlines() or ["?"])[-1]
        raise ConfigError(f"--lightly-python {python}: needs lightly_train and timm ({last})")
    return got.stdout.strip()


def run_lightly(seed_dir: Path, data: Path, teacher: Path, seed: int, args) -> dict:
    """LightlyTrain's distillation in its own environment; ``{"wall_s", "export", ...}``."""
    folder = seed_dir / "lightly"
    done = read_json(folder / "run.json")
    if done:
        return done
    folder.mkdir(parents=True, exist_ok=True)
    mean, std = dataset_stats(DataConfig(dataset=str(data)))  # moma's for this folder
    spec = {
        "teacher": str(teacher),
        "result": str(folder / "driver_result.json"),
        "pretrain": {
            "out": str(folder / "train"),
            "data": str(data / "train"),
            "model": f"timm/{ARCH}",
            "model_args": {**STUDENT, "num_classes": 0},
            "method": "distillationv1",
            "epochs": args.lightly_epochs,
            "batch_size": args.batch_size,
            "precision": args.precision,
            "accelerator": "cpu",
            "devices": 1,
            "seed": seed,
            "overwrite": True,  # an unfinished earlier attempt is started over
            "transform_args": {
                "image_size": [32, 32],
                "normalize": {"mean": list(mean), "std": list(std)},
            },
        },
    }
    write_json(folder / "spec.json", spec)
    (folder / "driver_result.json").unlink(missing_ok=True)
    env = {**os.environ, "LIGHTLY_TRAIN_EVENTS_DISABLED": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [args.lightly_python, str(DRIVER), str(folder / "spec.json")]
    log.info("seed %d: LightlyTrain, %d epoch(s) (log: %s)", seed, args.lightly_epochs, folder)
    load0 = loadavg()
    with open(folder / "driver.log", "w") as logf:
        rc = subprocess.run(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT).returncode
    result = read_json(folder / "driver_result.json")
    if rc != 0 or result is None:
        raise MomaError(f"LightlyTrain driver failed (exit {rc}): see {folder / 'driver.log'}")
    # moma's loader reads the exported timm state dict; the export is then evaluated as-is
    student = load_backbone(result["export"], arch=ARCH, format="timm", num_heads=3)
    export_backbone(student, folder / "student.safetensors", arch=ARCH)
    rec = {
        "tool": "lightly",
        "seed": seed,
        "epochs": args.lightly_epochs,
        "wall_s": result["wall_s"],
        "student": str(folder / "student.safetensors"),
        "lightly_export": result["export"],
        "versions": {k: result[k] for k in ("lightly_train", "torch", "timm")},
        "command": "LIGHTLY_TRAIN_EVENTS_DISABLED=1 HF_HUB_OFFLINE=1 " + " ".join(cmd),
        "pretrain_kwargs": spec["pretrain"],
        "loadavg_before": load0,
        "loadavg_after": loadavg(),
    }
    write_json(folder / "run.json", rec)
    return rec


def moma_config(out_dir: Path, data: Path, teacher: Path, epochs: int, seed: int, args):
    return MomaRunConfig(
        data=data_config(data, args, seed),
        teachers=[TeacherConfig(path=str(teacher), name="teacher")],
        student=StudentConfig(init="random", backbone=BackboneConfig(arch=ARCH, **STUDENT)),
        optim=OptimConfig(base_lr=1e-3),  # the quickstart's lr for a random student
        trainer=TrainerConfig(
            out_dir=str(out_dir), max_epochs=epochs, precision=args.precision, seed=seed,
            progress_bar=sys.stderr.isatty(), accelerator="cpu",
        ),
        cache=CacheConfig(views=args.cache_views, dir=str(out_dir.parent / f"{out_dir.name}-targets")),
    )  # fmt: skip


def timed_moma(out_dir: Path, data: Path, teacher: Path, epochs: int, seed: int, args) -> dict:
    """One ``moma distill`` from scratch (its own cache built too); its times."""
    done = read_json(out_dir / "run.json")
    if done:
        return done
    cfg = moma_config(out_dir, data, teacher, epochs, seed, args)
    if out_dir.exists() or Path(cfg.cache.dir).exists():
        log.warning("%s: an unfinished earlier attempt, starting it over", out_dir)
        shutil.rmtree(out_dir, ignore_errors=True)
        shutil.rmtree(cfg.cache.dir, ignore_errors=True)
    log.info(
        "seed %d: moma, %d epoch(s), %d cached view(s) (%s)",
        seed,
        epochs,
        args.cache_views,
        out_dir,
    )
    load0 = loadavg()
    t0 = time.perf_counter()
    res = run_moma(cfg)
    wall = time.perf_counter() - t0
    if res.interrupted:
        raise MomaError(f"{out_dir}: the moma run was interrupted; run the benchmark again")
    epoch_s = [v for _, v in read_metrics(out_dir, "time/epoch_s")]
    rec = {
        "tool": "moma",
        "seed": seed,
        "epochs": epochs,
        "steps": res.global_step,
        "cache_views": args.cache_views,
        "wall_s": round(wall, 2),
        "cache_build_s": read_json(out_dir / "target_cache.json")["seconds"],
        "epoch_s": [round(v, 2) for v in epoch_s],
        "student": str(res.export),
        "command": f"moma distill --config {out_dir / 'config.yaml'}",
        "loadavg_before": load0,
        "loadavg_after": loadavg(),
    }
    write_json(out_dir / "run.json", rec)
    return rec


def moma_epochs(target_s: float, calib: dict) -> int:
    """Epochs whose run (fixed costs + cache build + epochs) lasts about ``target_s``.

    The calibration's last epoch is the per-epoch cost (the first one also warms up)."""
    epoch = calib["epoch_s"][-1]
    fixed = calib["wall_s"] - calib["cache_build_s"] - sum(calib["epoch_s"])
    return max(1, round((target_s - fixed - calib["cache_build_s"]) / epoch))


# --- evaluation and the table -----------------------------------------------------------


def evaluate(
    name: str,
    backbone: str,
    role: str,
    seed: int,
    folder: Path,
    data: DataConfig,
    splits: Callable[[], tuple],
    args: argparse.Namespace,
) -> dict:
    """kNN k=20 and the linear probe on each feature: ``{feature: {"knn_k20", "linear"}}``.

    ``splits()``: the ``(train, test)`` splits of ``data`` (decoded once, when first needed)."""
    path = folder / f"eval-{name}.json"
    digest = sha256_file(backbone)
    done = read_json(path)
    if done and done.get("backbone_sha256") == digest:  # else the model was trained again
        return done
    rec: dict = {"backbone_sha256": digest}
    for feat in FEATURES:
        common = dict(datasets=splits(), seed=seed, features=feat)
        knn = run_eval("knn", backbone, data, folder, f"{name}-{feat}", role, k=[20], **common)
        lin = run_eval(
            "linear", backbone, data, folder, f"{name}-{feat}", role,
            epochs=args.linear_epochs, **common,
        )  # fmt: skip
        rec[feat] = {"knn_k20": knn["knn-k20"]["value"], "linear": lin["linear"]["value"]}
        log.info("%s, %s: kNN %.2f%%, linear %.2f%%", name, feat, *rec[feat].values())
    write_json(path, rec)
    return rec


def _stat(values: list[float], digits: int = 2) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} +- {statistics.stdev(values):.{digits}f}"


def table(runs: list[dict], teacher_eval: dict, args: argparse.Namespace) -> str:
    """The Markdown table: per tool and feature, mean (+- sample std) over seeds."""
    seeds = sorted({r["seed"] for r in runs})
    lines = [
        f"Teacher {args.teacher} -> random 6x192/4 ViT student (32 px), {args.images} "
        f"Fashion-MNIST PNGs, batch {args.batch_size}, {args.precision}, seeds {seeds}; moma "
        f"with {args.cache_views} cached view(s) per image, its epochs matched to "
        "LightlyTrain's wall time (cache build included). kNN bank / probe set = the same "
        f"{args.images} images, queries = the {TEST_IMAGES} test images; linear probe "
        f"{args.linear_epochs} epochs. 'trained' marks the feature each tool distils.",
        "",
        "| tool | epochs | wall time (s) | images/s | features | kNN k=20 (%) | linear (%) |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for tool in ("moma", "lightly", "teacher"):
        mine = [r for r in runs if r["tool"] == tool] if tool != "teacher" else [teacher_eval]
        if not mine:
            continue
        if tool == "teacher":
            cost = ["-", "-", "-"]
        else:
            ips = [args.images * r["epochs"] / r["wall_s"] for r in mine]
            epochs = sorted({r["epochs"] for r in mine})
            cost = [
                "/".join(map(str, epochs)),
                _stat([r["wall_s"] for r in mine], 0),
                _stat(ips, 0),
            ]
        order = [TRAINED[tool]] + [f for f in FEATURES if f != TRAINED[tool]]
        for feat in order:
            label = FEATURES[feat] + (
                " (trained)" if feat == TRAINED[tool] and tool != "teacher" else ""
            )
            knn = _stat([r["eval"][feat]["knn_k20"] for r in mine])
            lin = _stat([r["eval"][feat]["linear"] for r in mine])
            lines.append(f"| {TOOLS[tool]} | {' | '.join(cost)} | {label} | {knn} | {lin} |")
    pairs = [
        (m, lt)
        for m in runs
        if m["tool"] == "moma"
        for lt in runs
        if lt["tool"] == "lightly" and lt["seed"] == m["seed"]
    ]
    if pairs:
        d_knn = [m["eval"]["cls"]["knn_k20"] - lt["eval"]["mean"]["knn_k20"] for m, lt in pairs]
        d_lin = [m["eval"]["cls"]["linear"] - lt["eval"]["mean"]["linear"] for m, lt in pairs]
        ratio = [m["wall_s"] / lt["wall_s"] for m, lt in pairs]
        lines += [
            "",
            f"moma - LightlyTrain, each on its trained feature: kNN {_stat(d_knn)} points, "
            f"linear {_stat(d_lin)} points, at a wall-time ratio moma / LightlyTrain of "
            f"{_stat(ratio)}.",
        ]
    return "\n".join(lines) + "\n"


# --- main -------------------------------------------------------------------------------


def check_settings(out: Path, args: argparse.Namespace, teacher: Path) -> None:
    """Refuse to mix results of other settings into ``out`` (its first run recorded them)."""
    mine = {k: getattr(args, k) for k in SETTINGS} | {"teacher_sha256": sha256_file(teacher)}
    path = out / "settings.json"
    before = read_json(path)
    if before is None:
        write_json(path, mine)
        return
    diff = [k for k in mine if before.get(k) != mine[k]]
    if diff:
        what = ", ".join(f"{k} {before.get(k)} -> {mine[k]}" for k in diff)
        raise ConfigError(f"{out} holds results of other settings ({what}): use another --out")


def run(args: argparse.Namespace) -> str:
    out = Path(args.out).resolve()
    teacher = check_teacher(args.teacher)
    lt_version = check_lightly_python(args.lightly_python)
    if not args.batch_size <= args.images <= 60_000:
        raise ConfigError(f"--images must be in [--batch-size, 60000], got {args.images}")
    for opt in ("cache_views", "lightly_epochs", "linear_epochs"):
        if getattr(args, opt) < 1:
            raise ConfigError(f"--{opt.replace('_', '-')} must be >= 1, got {getattr(args, opt)}")
    out.mkdir(parents=True, exist_ok=True)
    check_settings(out, args, teacher)
    data = prepare_data(out, args.images, args.data_root)
    report = {
        "command": " ".join([sys.executable, *sys.argv]),
        "args": vars(args),
        "lightly_train": lt_version,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "data": str(data),
        "runs": [],
    }
    eval_data = data_config(data, args, args.seeds[0])

    @functools.cache
    def splits() -> tuple:
        return load_split(eval_data, "train"), load_split(eval_data, "test")

    calib = None
    for seed in args.seeds:
        seed_dir = out / f"seed{seed}"
        lt = run_lightly(seed_dir, data, teacher, seed, args)
        if calib is None:
            # the cache build and two epochs in their own folder: the costs the epochs are set from
            calib = timed_moma(
                out / "calibration" / "moma", data, teacher, CALIBRATION_EPOCHS, args.seeds[0], args
            )
            report["calibration"] = calib
        epochs = moma_epochs(lt["wall_s"], calib)
        mm = timed_moma(seed_dir / "moma", data, teacher, epochs, seed, args)
        ratio = mm["wall_s"] / lt["wall_s"]
        if abs(ratio - 1) > RATIO_TOLERANCE:
            log.warning(
                "seed %d: moma took %.2fx LightlyTrain's wall time (the calibration's costs "
                "did not hold: a busy machine?); delete %s and run again to redo it",
                seed, ratio, seed_dir / "moma",
            )  # fmt: skip
        for rec in (lt, mm):
            name = f"{rec['tool']}-seed{seed}"
            rec["eval"] = evaluate(
                name, rec["student"], "student", seed, seed_dir, eval_data, splits, args
            )
            report["runs"].append(rec)
    teacher_eval = {
        "path": str(teacher),
        "eval": evaluate(
            "teacher", str(teacher), "teacher", args.seeds[0], out, eval_data, splits, args
        ),
    }
    report["teacher"] = teacher_eval
    text = table(report["runs"], teacher_eval, args)
    write_json(out / "vs_lightly_train.json", report)
    atomic_write(out / "vs_lightly_train.md", lambda f: f.write(text.encode()))
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", required=True, help="a moma export (.safetensors)")
    p.add_argument(
        "--lightly-python",
        default=os.environ.get("LIGHTLY_TRAIN_PYTHON"),
        help="python of an environment with lightly-train and timm (default $LIGHTLY_TRAIN_PYTHON)",
    )
    p.add_argument("--out", default="runs/vs_lightly_train", help="where everything goes")
    p.add_argument("--images", type=int, default=20_000, help="training images (the first N)")
    p.add_argument("--lightly-epochs", type=int, default=2, help="LightlyTrain's epochs")
    p.add_argument("--cache-views", type=int, default=2, help="moma's cached views per image")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--batch-size", type=int, default=256, help="both tools")
    p.add_argument("--precision", default="bf16-mixed", help="both tools")
    p.add_argument("--linear-epochs", type=int, default=30)
    p.add_argument("--data-root", default=None, help="Fashion-MNIST folder (moma's default)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        text = run(args)
    except MomaError as err:
        p.exit(2, f"vs_lightly_train: error: {err}\n")
    print(text)  # the table is this script's output


if __name__ == "__main__":
    main()
