"""End-to-end distillation throughput, data included: ``moma distill`` on generated JPEGs.

    python benchmarks/throughput.py --work /tmp/tp                       # CPU-sized smoke run
    python benchmarks/throughput.py --work /tmp/tp --images 8192 --batch 256 --steps 60 \\
        --compile none,blocks --decode device,workers --workers 12      # one H100/H200

Makes (once, in ``--work``) a set of photo-like JPEGs of ImageNet's typical size packed in
WebDataset shards, and two randomly initialised ViT-B/16 teachers (the weights do not change
the cost). Then, for each combination of ``--compile`` and ``--decode``, runs ``moma distill``
(two ViT-B/16 teachers -> ViT-S/16 student, 224 px, bf16, mask 0.9, CLS targets) through the
CLI in a fresh process and times its training steps from inside (`step_clock.py`), after
``--warm`` steps (compilation and CUDA-graph recording happen there). Prints and writes
``WORK/throughput.md``: img/s of the steps, data loading and augmentation included.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _photo(rng: object) -> object:
    """One photo-like 500x375 PIL image: smooth colour fields plus grain."""
    import numpy as np
    from PIL import Image

    coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    arr = np.asarray(coarse.resize((500, 375), Image.Resampling.BICUBIC), np.int16)
    return Image.fromarray(np.clip(arr + rng.integers(-12, 13, arr.shape), 0, 255).astype(np.uint8))


def make_images(folder: Path, count: int, seed: int = 0) -> str:
    """``count`` JPEGs of 500x375 px in shards of 512 (skipped when present); the pattern."""
    import numpy as np

    per_shard = 512
    shards = (count + per_shard - 1) // per_shard
    pattern = str(folder / f"train-{{000000..{shards - 1:06d}}}.tar")
    if (folder / f"train-{shards - 1:06d}.tar").exists():
        return pattern
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for s in range(shards):
        with tarfile.open(folder / f"train-{s:06d}.tar", "w") as tar:
            for i in range(s * per_shard, min(count, (s + 1) * per_shard)):
                path = folder / "tmp.jpg"
                _photo(rng).save(path, quality=90)
                tar.add(path, arcname=f"{i:08d}.jpg")
                cls = folder / "tmp.cls"
                cls.write_text(str(i % 1000))
                tar.add(cls, arcname=f"{i:08d}.cls")
    return pattern


def make_folder(folder: Path, count: int, seed: int = 0) -> str:
    """The same kind of JPEGs as an image folder (10 class subfolders): the layout the target
    cache reads by index (tar shards are read in order, so their teachers run live)."""
    import numpy as np

    done = folder / ".complete"
    if done.exists():
        return str(folder)
    rng = np.random.default_rng(seed)
    for i in range(count):
        sub = folder / f"c{i % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        _photo(rng).save(sub / f"{i:08d}.jpg", quality=90)
    done.touch()
    return str(folder)


def make_teachers(folder: Path) -> list[str]:
    """Two random ViT-B/16 backbones exported as moma does (``.safetensors`` + ``.json``)."""
    import torch

    from moma.models.export import export_backbone
    from moma.models.vit import BackboneConfig

    paths = []
    for i, name in enumerate(("mocov3", "mae")):
        path = folder / f"{name}-vit-b16.safetensors"
        if not path.exists():
            torch.manual_seed(i)
            vit = BackboneConfig(arch="vit_base_patch16_224", img_size=224, patch_size=16).build()
            export_backbone(vit, path, arch="vit_base_patch16_224")
        paths.append(str(path))
    return paths


def child(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(HERE))
    from step_clock import prepare, run_timed

    prepare()
    report = run_timed(json.loads(args.argv), args.warm)
    print(json.dumps(report))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", required=True, help="folder for the images, teachers and runs")
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=6, help="training steps per run")
    ap.add_argument("--warm", type=int, default=3, help="untimed first steps")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--layout",
        choices=("shards", "folder"),
        default="shards",
        help="JPEGs in WebDataset shards, or an image folder (what the cache needs)",
    )
    ap.add_argument("--compile", default="none", help="comma list of trainer.compile modes")
    ap.add_argument("--decode", default="auto", help="comma list of data.decode modes")
    ap.add_argument("--precision", default="bf16-mixed")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    ap.add_argument("--extra", default="", help="more `moma distill` flags (one string)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--argv", default="[]", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    work = Path(args.work)
    t0 = time.perf_counter()
    if args.layout == "folder":
        pattern = make_folder(work / "folder", args.images)
    else:
        pattern = make_images(work / "shards", args.images)
    teachers = make_teachers(work)
    print(f"data and teachers ready in {time.perf_counter() - t0:.0f} s", flush=True)
    lines = [
        f"# Distillation throughput, data included ({args.images} JPEGs 500x375, {args.layout})",
        "",
        f"    python benchmarks/throughput.py {' '.join(sys.argv[1:])}",
        "",
        "| compile | decode | batch | timed steps | img/s (steps) | wall s | rc |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for mode in args.compile.split(","):
        for decode in args.decode.split(","):
            argv = [
                "distill", "--data.dataset", pattern, "--data.img_size", "224",
                "--data.batch_size", str(args.batch), "--data.num_workers", str(args.workers),
                "--data.decode", decode,
                "--teachers", json.dumps([{"path": p} for p in teachers]),
                "--student.backbone.arch", "vit_small_patch16_224",
                "--student.backbone.img_size", "224", "--student.backbone.patch_size", "16",
                "--moma.mask_ratio", "0.9", "--moma.targets", "cls",
                "--trainer.max_steps", str(args.steps + args.warm),
                "--trainer.precision", args.precision, "--trainer.compile", mode,
                "--trainer.progress_bar", "false", "--trainer.ckpt_every_n_steps", "100000",
                "--trainer.out_dir", str(work / f"run-{mode}-{decode}"),
                "--trainer.resume", "never", *shlex.split(args.extra),
            ]  # fmt: skip
            cmd = [sys.executable, __file__, "--child", "--work", str(work), "--warm",
                   str(args.warm), "--argv", json.dumps(argv)]  # fmt: skip
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
                last = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "{}"
                r = json.loads(last) if last.startswith("{") else {}
                rc = out.returncode
                if rc != 0:
                    sys.stderr.write(out.stderr[-3000:])
            except subprocess.TimeoutExpired:
                r, rc = {}, "timeout"
            steps_s = r.get("steps_s")
            ips = args.batch * r["timed_steps"] / steps_s if steps_s else None
            lines.append(
                f"| {mode} | {decode} | {args.batch} | {r.get('timed_steps', '-')} | "
                f"{'-' if ips is None else f'{ips:.0f}'} | {r.get('wall_s', '-')} | {rc} |"
            )
            print(lines[-1], flush=True)
    text = "\n".join(lines) + f"\n\nLoad at the end: {os.getloadavg()}.\n"
    (work / "throughput.md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
