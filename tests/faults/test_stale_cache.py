"""The evaluation feature cache never serves a stale or damaged entry.

Before the fix the cache was keyed by the dataset's *path*: after images were moved between
classes and some deleted, ``moma eval knn`` logged "feature cache hit" and reported the old
accuracy; and a cache file with flipped bytes was used as it was. Now the key is a content
fingerprint of each split (``moma.data.fingerprint``) and each file carries a sha256 of its
tensors, checked on every read.
"""

from __future__ import annotations

import logging
import os

from faults.runs import knn_top1, two_classes
from faults.test_bad_inputs import flip_bytes


def cache_hits(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "feature cache hit" in r.getMessage()]


def test_a_dataset_edited_in_place_is_a_cache_miss(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="moma.eval.cache")
    data, out = two_classes(tmp_path / "data"), tmp_path / "eval"
    assert knn_top1(data, out) == 100.0
    caplog.clear()
    # Swap the training images of the two classes (renames keep sizes and mtimes), drop two.
    train = data / "train"
    os.rename(train / "a", train / "tmp")
    os.rename(train / "b", train / "a")
    os.rename(train / "tmp", train / "b")
    (train / "a" / "0.png").unlink()
    (train / "b" / "7.png").unlink()
    value = knn_top1(data, out)
    assert len(cache_hits(caplog)) == 1  # the test split is unchanged: its entry is still good
    assert value == knn_top1(data, tmp_path / "fresh", cache=False) == 0.0  # labels swapped


def test_flipped_bytes_in_a_cached_feature_file_are_caught(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="moma.eval.cache")
    data, out = two_classes(tmp_path / "data"), tmp_path / "eval"
    first = knn_top1(data, out)
    biggest = max((out / "cache" / "features").glob("*.pt"), key=lambda p: p.stat().st_size)
    flip_bytes(biggest, where=0.6, n=64)
    caplog.clear()
    assert knn_top1(data, out) == first
    damaged = [r for r in caplog.records if "damaged feature cache entry" in r.getMessage()]
    assert len(damaged) == 1 and biggest.name in damaged[0].getMessage()
    assert damaged[0].levelno == logging.WARNING
    assert len(cache_hits(caplog)) == 1  # the intact split
    caplog.clear()
    assert knn_top1(data, out) == first and len(cache_hits(caplog)) == 2  # rewritten intact
