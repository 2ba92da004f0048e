"""Seconds per backbone of the report's t-SNE map, at the quickstart's two sizes.

Round-robin in one process (ratios survive a shared machine better than absolute figures):
raw pixels (3072-d) and a random-init 6x192 ViT's CLS features (192-d) of the Fashion-MNIST
test subsample the report uses, at 500 (smoke budget) and 2000 (default) points.

    python benchmarks/feature_map_time.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import Subset

from moma.data import DataConfig, load_split
from moma.eval.baselines import RawPixels
from moma.eval.features import extract_features
from moma.models.vit import BackboneConfig
from moma.report.feature_map import subsample, tsne_2d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    test = load_split(DataConfig(), "test")
    torch.manual_seed(0)
    models = {
        "raw-pixels": RawPixels(),
        "vit 6x192": BackboneConfig(depth=6, embed_dim=192, num_heads=3).build(),
    }
    feats = {}
    for points in (500, 2000):
        sub = Subset(test, subsample(len(test), points).tolist())
        for name, model in models.items():
            feats[(name, points)] = extract_features(model, sub, batch_size=256)[0].numpy()
    times: dict = {k: [] for k in feats}
    for _ in range(args.repeats):
        for key, x in feats.items():
            t0 = time.perf_counter()
            tsne_2d(x)
            times[key].append(time.perf_counter() - t0)
    print("| features | points | t-SNE median (s) | min (s) |")
    print("| --- | ---: | ---: | ---: |")
    for (name, points), ts in times.items():
        print(f"| {name} | {points} | {statistics.median(ts):.2f} | {min(ts):.2f} |")
    print(f"load average after: {Path('/proc/loadavg').read_text().split()[:3]}")


if __name__ == "__main__":
    main()
