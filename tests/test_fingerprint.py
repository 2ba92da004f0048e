import os

import numpy as np
from PIL import Image

from moma.data import DataConfig
from moma.data.fingerprint import split_fingerprint


def _folder(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / cls / f"{i}.png")
    return DataConfig(dataset=str(tmp_path))


def test_folder_fingerprint_follows_the_files(tmp_path):
    cfg = _folder(tmp_path)
    first = split_fingerprint(cfg, "train")
    assert split_fingerprint(cfg, "train") == first  # stable
    os.rename(tmp_path / "a" / "0.png", tmp_path / "b" / "9.png")  # moved between classes
    moved = split_fingerprint(cfg, "train")
    assert moved != first
    (tmp_path / "b" / "1.png").unlink()  # deleted
    assert split_fingerprint(cfg, "train") not in (first, moved)


def test_fingerprint_covers_subset_and_split():
    cfg = DataConfig()
    full = split_fingerprint(cfg, "train")
    assert split_fingerprint(DataConfig(subset=100), "train") != full
    assert split_fingerprint(cfg, "test") != full
