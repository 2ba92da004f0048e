"""Peak memory and speed of ``moma embed`` on a 60k-image folder against a 6k subset of it.

Flat memory means the peak RSS of the 60k run is close to the 6k run's: the images stream
from disk and the rows go to disk through small memory maps. Each size runs in its own
process (``ru_maxrss`` is per process). The folder (32 px PNGs, 10 class sub-folders) is
generated once and reused.

    python benchmarks/embed_memory.py                       # 6000 and 60000 images
    python benchmarks/embed_memory.py --sizes 6000 60000 --folder /tmp/moma_embed_bench
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


def make_folder(folder: Path, n: int, classes: int = 10) -> None:
    """``n`` random 32 px PNGs in ``classes`` sub-folders (skipped when already there)."""
    import numpy as np
    from PIL import Image

    marker = folder / f".complete-{n}"
    if marker.exists():
        return
    rng = np.random.default_rng(0)
    for i in range(n):
        sub = folder / f"class{i % classes}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
            sub / f"{i:06d}.png"
        )
    marker.touch()


def measure(folder: Path, images: int, backbone: Path, out: Path) -> dict:
    """Run ``moma embed`` on the first ``images`` of the folder in this process."""
    import torch

    from moma.commands.embed import run_embed
    from moma.data import DataConfig
    from moma.eval.embed import EmbedConfig

    torch.set_num_threads(max(1, (os.cpu_count() or 2)))
    cfg = EmbedConfig(
        backbone=str(backbone), out=str(out), data=DataConfig(dataset=str(folder), subset=images),
        split="train", batch_size=256, progress_bar=False, overwrite=True,
    )  # fmt: skip
    t0 = time.perf_counter()
    res = run_embed(cfg)
    wall = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return {"images": res.rows, "dim": res.dim, "wall_s": round(wall, 1),
            "images_per_s": round(res.rows / wall, 1), "peak_rss_mib": round(peak_mib, 1)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[6000, 60000])
    ap.add_argument("--folder", type=Path, default=Path("/tmp/moma_embed_bench"))
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child mode: one size
    args = ap.parse_args()
    backbone = args.folder.parent / f"{args.folder.name}-backbone.safetensors"
    if args.one is not None:
        out = args.folder.parent / f"{args.folder.name}-{args.one}.npy"
        print(json.dumps(measure(args.folder, args.one, backbone, out)))
        return
    make_folder(args.folder, max(args.sizes))
    if not backbone.exists():
        import torch

        from moma.models.export import export_backbone
        from moma.models.vit import BackboneConfig

        torch.manual_seed(0)
        cfg = BackboneConfig(depth=6, embed_dim=192, num_heads=3)  # the quickstart's teachers
        export_backbone(cfg.build(), backbone, arch=cfg.arch)
    print("| images | dim | wall (s) | images/s | peak RSS (MiB) |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for n in args.sizes:
        cmd = [sys.executable, __file__, "--folder", str(args.folder), "--one", str(n)]
        line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        r = json.loads(line.strip().splitlines()[-1])
        print(f"| {r['images']} | {r['dim']} | {r['wall_s']} | {r['images_per_s']} | "
              f"{r['peak_rss_mib']} |", flush=True)  # fmt: skip
    print(f"load average after: {Path('/proc/loadavg').read_text().split()[:3]}")


if __name__ == "__main__":
    main()
