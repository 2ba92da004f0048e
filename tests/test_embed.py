"""``moma embed``: every image's embedding in a .npy + .csv that load in one line; resumable."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from toy import TINY

from moma.cli.main import main
from moma.commands.embed import run_embed
from moma.data import DataConfig, load_split
from moma.errors import DataError
from moma.eval.embed import EmbedConfig
from moma.eval.embed_store import EmbeddingStore
from moma.eval.features import extract_features
from moma.models.checkpoint import load_backbone
from moma.models.export import export_backbone


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bb") / "backbone.safetensors"
    export_backbone(TINY.build(), path, arch=TINY.arch)
    return path


def write_images(folder: Path, n: int, seed: int) -> list[Path]:
    """``n`` random PNGs of varied sizes (so the resize + crop matters)."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    paths = []
    for i in range(n):
        h, w = 18 + i % 5, 20 + i % 7
        px = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy()
        paths.append(folder / f"img{i:03d}.png")
        Image.fromarray(px).save(paths[-1])
    return paths


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def embed(backbone: Path, dataset, out: Path, **kw):
    data = kw.pop("data", {})
    return run_embed(
        EmbedConfig(
            backbone=str(backbone), out=str(out), data=DataConfig(dataset=str(dataset), **data),
            precision="32", batch_size=kw.pop("batch_size", 8), progress_bar=False, **kw,
        )
    )  # fmt: skip


def test_labelled_folder_with_splits_equals_eval_features(tmp_path, backbone):
    root = tmp_path / "imgs"
    for split, n in (("train", 7), ("val", 5)):
        for c, cls in enumerate(("cat", "dog")):
            write_images(root / split / cls, n, seed=10 * c + n)
    out = tmp_path / "out" / "emb.npy"
    res = embed(backbone, root, out)
    assert res.computed and (res.rows, res.dim) == (24, 32)

    X = np.load(out)  # the documented one-liner (pandas: pd.read_csv(out.with_suffix(".csv")))
    rows = read_rows(out.with_suffix(".csv"))
    assert X.shape == (24, 32) and X.dtype == np.float32 and len(rows) == 24
    assert list(rows[0]) == ["file", "label", "class"]
    assert rows[0] == {"file": "train/cat/img000.png", "label": "0", "class": "cat"}
    assert rows[-1] == {"file": "val/dog/img004.png", "label": "1", "class": "dog"}
    # the same features as moma eval extracts from the same splits
    model = load_backbone(backbone)
    ref = [
        extract_features(
            model,
            load_split(DataConfig(str(root), img_size=16, in_memory=False), s),
            "cls",
            precision="32",
        )  # fmt: skip
        for s in ("train", "val")
    ]
    np.testing.assert_allclose(X, torch.cat([f for f, _ in ref]).numpy(), rtol=0, atol=1e-5)
    assert [int(r["label"]) for r in rows] == torch.cat([y for _, y in ref]).tolist()
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["classes"] == ["cat", "dog"] and meta["splits"] == ["train", "val"]
    assert not out.with_name("emb.npy.partial").exists()
    assert not out.with_name("emb.npy.progress.json").exists()

    # finished: not recomputed; only one split on request
    mtime = out.stat().st_mtime_ns
    assert not embed(backbone, root, out).computed and out.stat().st_mtime_ns == mtime
    val = embed(backbone, root, tmp_path / "val.npy", split="val")
    np.testing.assert_array_equal(np.load(tmp_path / "val.npy"), X[14:])
    assert val.rows == 10


def test_flat_unlabelled_folder_and_an_unreadable_image(tmp_path, backbone):
    root = tmp_path / "flat"
    write_images(root, 9, seed=3)
    (root / "img004.png").write_bytes(b"not a png")  # unreadable
    out = tmp_path / "flat.npy"
    embed(backbone, root, out, features="mean")
    X, rows = np.load(out), read_rows(out.with_suffix(".csv"))
    assert X.shape == (9, 32) and list(rows[0]) == ["file"]
    assert [r["file"] for r in rows] == [f"img{i:03d}.png" for i in range(9)]
    nan_rows = np.isnan(X).all(axis=1)
    assert nan_rows.tolist() == [i == 4 for i in range(9)]  # rows stay aligned with the files
    assert json.loads(out.with_suffix(".json").read_text())["unreadable"] == ["img004.png"]
    with pytest.raises(DataError, match="img004.png"):
        embed(backbone, root, tmp_path / "strict.npy", data={"strict": True})


def test_fashion_mnist_rows_are_split_index_label(tmp_path, backbone):
    pytest.importorskip("moma.data.fashion_mnist").find_root(None)
    out = tmp_path / "fm.npy"
    embed(backbone, "fashion_mnist", out, split="train", data={"subset": 40}, batch_size=16)
    rows = read_rows(out.with_suffix(".csv"))
    ds = load_split(DataConfig(img_size=16, subset=40), "train")
    assert np.load(out).shape == (40, 32) and list(rows[0]) == ["split", "index", "label", "class"]
    assert [int(r["label"]) for r in rows] == ds.labels.tolist()
    assert rows[1]["index"] == "1" and rows[0]["class"] in ("T-shirt/top", "Trouser", "Pullover",
        "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")  # fmt: skip


def test_interrupted_run_resumes_to_the_same_file(tmp_path, backbone, monkeypatch):
    root = tmp_path / "imgs"
    for cls in ("a", "b", "c"):
        write_images(root / cls, 10, seed=ord(cls))
    whole = tmp_path / "whole.npy"
    embed(backbone, root, whole, batch_size=4)

    out = tmp_path / "cut.npy"
    real_write, starts = EmbeddingStore.write, []

    def write_then_stop(self, start, block, unreadable=()):
        if len(starts) == 3:
            raise KeyboardInterrupt  # Ctrl-C after three blocks
        starts.append(start)
        real_write(self, start, block, unreadable)

    monkeypatch.setattr(EmbeddingStore, "write", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        embed(backbone, root, out, batch_size=4)
    assert not out.exists() and out.with_name("cut.npy.partial").exists()
    progress = json.loads(out.with_name("cut.npy.progress.json").read_text())
    assert progress["rows_done"] == 12

    starts.clear()
    monkeypatch.setattr(
        EmbeddingStore, "write", lambda s, *a: starts.append(a[0]) or real_write(s, *a)
    )
    res = embed(backbone, root, out, batch_size=4)
    assert res.computed and starts[0] == 12  # only the rows not yet written were computed
    np.testing.assert_array_equal(np.load(out), np.load(whole))
    assert out.with_suffix(".csv").read_text() == whole.with_suffix(".csv").read_text()

    # a resume with other inputs starts over instead of mixing two runs' rows
    monkeypatch.setattr(EmbeddingStore, "write", write_then_stop)
    starts.clear()
    with pytest.raises(KeyboardInterrupt):
        embed(backbone, root, tmp_path / "mixed.npy", batch_size=4)
    monkeypatch.setattr(EmbeddingStore, "write", real_write)
    embed(backbone, root, tmp_path / "mixed.npy", batch_size=4, features="mean")
    embed(backbone, root, tmp_path / "mean.npy", batch_size=4, features="mean")
    np.testing.assert_array_equal(np.load(tmp_path / "mixed.npy"), np.load(tmp_path / "mean.npy"))


def test_cli_errors_keep_what_was_written(tmp_path, backbone, capsys):
    root = tmp_path / "flat"
    write_images(root, 3, seed=1)
    out = tmp_path / "emb.npy"
    base = ["embed", "--backbone", str(backbone), "--data.dataset", str(root),
            "--progress_bar", "false"]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "emb.txt")]) == 2
    assert "must end in .npy" in capsys.readouterr().err
    assert main([*base, "--out", str(out)]) == 0
    before = out.read_bytes()
    # other inputs into the same file: refused, the file kept
    assert main([*base, "--out", str(out), "--features", "mean"]) == 2
    assert "--overwrite true" in capsys.readouterr().err and out.read_bytes() == before
    assert main([*base, "--out", str(out), "--features", "mean", "--overwrite", "true"]) == 0
    assert out.read_bytes() != before
    assert main([*base, "--out", str(tmp_path / "x.npy"), "--split", "val"]) == 2
    assert "no train/ and val/" in capsys.readouterr().err
