"""Odd entries in an image folder: link cycles, self-links, FIFOs, unreadable files.

Before the fix the scan followed every folder link (``os.walk(followlinks=True)``): a class
folder holding ``up -> ..`` multiplied 16 images into 656, a flat folder holding
``loop -> ..`` walked out of the data set and hung, ``self -> self`` raised a traceback, and a
FIFO named like an image blocked the reader for ever. The streaming path also counted an
unreadable file once per worker and per epoch ("skipped 6" for 2 files).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
from torch.utils.data import DataLoader

from faults.runs import TRACEBACK, deadline, image, knn_top1, two_classes
from moma.data import DataConfig, load_split
from moma.data.file_dataset import ImageFileDataset
from moma.data.folders import scan_split


def classes(root: Path, per_class: int = 8) -> Path:
    for i in range(per_class):
        image(root / "c1" / f"{i}.png", bright=False, seed=i)
        image(root / "c2" / f"{i}.png", bright=True, seed=50 + i)
    return root


def test_a_link_back_up_does_not_repeat_images(tmp_path):
    data = classes(tmp_path / "data")
    os.symlink("..", data / "c1" / "up")
    with deadline(60), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_split(DataConfig(dataset=str(data), img_size=8), "train")
    assert len(ds) == 16 and ds.labels.tolist() == [0] * 8 + [1] * 8
    assert any("c1/up: skipped: it leads to" in str(w.message) for w in caught)


def test_a_loop_in_a_flat_folder_stays_inside_the_data(tmp_path):
    image(tmp_path / "outside.png", bright=True, seed=0)  # not part of the data set
    flat = tmp_path / "flat"
    for i in range(4):
        image(flat / f"{i}.png", bright=False, seed=i)
    os.symlink("..", flat / "loop")
    with deadline(60), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        listing = scan_split(str(flat), "train")
    assert [Path(f).name for f in listing.files] == ["0.png", "1.png", "2.png", "3.png"]
    assert all(Path(f).parent == flat for f in listing.files) and listing.labels == [-1] * 4
    assert any("loop: skipped: it leads to" in str(w.message) for w in caught)


@pytest.mark.parametrize("odd", ["self-link", "fifo"])
def test_self_links_and_fifos_are_skipped_with_a_warning(tmp_path, capsys, odd):
    data = two_classes(tmp_path / "data")
    for split in ("train", "val"):
        if odd == "self-link":
            os.symlink("self", data / split / "self")  # a folder-level link to itself
            os.symlink("self.png", data / split / "a" / "self.png")
        else:
            os.mkfifo(data / split / "b" / "fifo.png")  # opening it would block
    with deadline(60), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert knn_top1(data, tmp_path / "eval") == 100.0  # the 24 real images, nothing else
    assert TRACEBACK not in capsys.readouterr().err
    text = "\n".join(str(w.message) for w in caught)
    if odd == "self-link":
        assert "self: skipped: Too many levels of symbolic links" in text
        assert "self.png: skipped: Too many levels of symbolic links" in text
    else:
        assert "fifo.png: skipped: not a regular file" in text


def test_unreadable_files_are_counted_once_across_workers_and_epochs(tmp_path):
    files = []
    for i in range(8):
        path = tmp_path / f"{i}.png"
        image(path, bright=False, seed=i)
        files.append(str(path))
    for bad in (files[2], files[5]):
        Path(bad).write_bytes(b"not a png")
    ds = ImageFileDataset(files, [0] * 8, transform=lambda img: 0)
    loader = DataLoader(ds, batch_size=2, num_workers=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one per bad file, from whichever worker met it
        for _ in range(2):  # two epochs: fresh workers each time
            assert sum(len(b[1]) for b in loader) == 8  # a readable image stands in
    assert ds.num_skipped == 2
