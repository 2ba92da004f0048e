"""The embedding of every image of a dataset, as ``.npy`` + ``.csv`` (``moma embed``).

The features are ``moma eval``'s (:func:`moma.eval.features.iter_features`: the global feature
or the mean of the patch tokens), streamed batch by batch into a preallocated ``.npy``
(:class:`moma.eval.embed_store.EmbeddingStore`), so a folder larger than RAM runs in flat
memory and a stopped run resumes where it stopped. Row ``i`` of ``OUT.npy`` is row ``i`` of
``OUT.csv``::

    X, rows = np.load("emb.npy", mmap_mode="r"), pd.read_csv("emb.csv")

An image folder's CSV has ``file`` (relative to ``data.dataset``) and, for labelled folders,
``label`` and ``class``; Fashion-MNIST's has ``split``, ``index`` (within the split), ``label``
and ``class``. An unreadable image gets a row of NaN and is listed in ``OUT.json``
(``data.strict true`` makes it an error instead).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from moma.data import fashion_mnist, load_split
from moma.data.config import DataConfig, is_fashion_mnist
from moma.data.fingerprint import files_fingerprint, split_fingerprint
from moma.data.folders import dataset_dir
from moma.data.image_io import load_rgb
from moma.data.splits import dataset_stats, folder_split
from moma.data.transforms import eval_transform
from moma.errors import ConfigError, DataError
from moma.eval.baselines import resolve_backbone
from moma.eval.embed_store import EmbeddingStore
from moma.eval.features import iter_features, pool_tokens
from moma.eval.run import dataset_name
from moma.moved import forwarder

log = logging.getLogger(__name__)
__getattr__ = forwarder(__name__)  # run_embed moved to moma.commands.embed

SPLITS = ("all", "train", "val", "test")


@dataclass
class EmbedConfig:
    """What ``moma embed`` takes.

    Attributes:
        backbone: a weights file (any format ``load_backbone`` reads), a run folder (its
            ``backbone.safetensors``), ``raw-pixels`` or ``random-init``.
        out: the ``.npy`` to write (float32 ``[images, dim]``); ``OUT.csv`` (one row per image:
            file name or split + index, label and class when there are labels) and ``OUT.json``
            (what made it) are written next to it.
        data: the images (``data.dataset``: ``fashion_mnist`` or an image folder; its
            ``data.img_size`` is replaced by the backbone's input size; ``data.num_workers``
            decode in parallel; ``data.strict`` makes an unreadable image an error).
        split: ``all`` (every image: Fashion-MNIST's train then test, a folder's ``train/``
            then ``val/`` and ``test/``, or the whole folder when it has no splits) or one split.
        features: ``cls`` (the global feature: CLS token, or the model's pooled feature when it
            has none) or ``mean`` (mean of the patch tokens), as ``moma eval``.
        batch_size: images per forward pass.
        precision: ``bf16`` autocast or full ``32``-bit forwards.
        arch: timm architecture hint for weights files that do not describe themselves.
        device: torch device (default: CUDA if available, else CPU).
        overwrite: replace an ``out`` made from other inputs (it is refused otherwise).
        progress_bar: show a progress bar with the rate and ETA.
    """

    backbone: str
    out: str
    data: DataConfig = field(default_factory=DataConfig)
    split: Literal["all", "train", "val", "test"] = "all"
    features: Literal["cls", "mean"] = "cls"
    batch_size: int = 256
    precision: Literal["bf16", "32"] = "bf16"
    arch: str | None = None
    device: str | None = None
    overwrite: bool = False
    progress_bar: bool = True


@dataclass
class EmbedResult:
    """Where ``moma embed`` wrote: the array, its CSV and metadata, and its shape.

    ``computed`` is ``False`` when ``embeddings`` was already complete and nothing ran.
    """

    embeddings: Path
    table: Path
    meta: Path
    rows: int
    dim: int
    computed: bool


@dataclass
class _Part:
    """One split of the dataset: its images (items ``(image, ok)`` or ``(image, label)``)."""

    split: str
    data: Any
    rows: list[dict]
    fingerprint: str
    files: list[str] | None = None  # image folders: ok flags come with the items


class _ImageFiles:
    """Image files for embedding: items ``(float [3, S, S], 1)``, or ``(zeros, 0)`` when the
    file cannot be read (its row becomes NaN), so rows stay aligned with the file list."""

    def __init__(self, files: list[str], img_size: int, mean, std, strict: bool) -> None:

        self.files, self.img_size, self.strict = files, img_size, strict
        self.transform = eval_transform(img_size, mean, std)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        import torch

        try:
            img = load_rgb(self.files[index], draft_size=self.img_size)
        except Exception as err:
            if self.strict:
                raise DataError(f"{self.files[index]}: unreadable image ({err})") from err
            return torch.zeros(3, self.img_size, self.img_size), 0
        return self.transform(img), 1


def _parts(cfg: DataConfig, split: str) -> tuple[list[_Part], list[str]]:
    """The splits to embed, in order, and the class names."""

    if is_fashion_mnist(cfg):
        parts = []
        for name in ("train", "test") if split == "all" else ("test" if split == "val" else split,):
            data = load_split(cfg, name)
            rows = [
                {"split": name, "index": i, "label": y, "class": fashion_mnist.CLASSES[y]}
                for i, y in enumerate(data.labels.tolist())
            ]
            parts.append(_Part(name, data, rows, split_fingerprint(cfg, name)))
        return parts, list(fashion_mnist.CLASSES)

    base = dataset_dir(cfg.dataset)
    if split == "all":
        names = ["train"]
        if (base / "train").is_dir():
            names += [s for s in ("val", "test") if (base / s).is_dir()]
    else:
        names = [split]
    mean, std = dataset_stats(cfg)
    parts, classes = [], []
    for name in names:
        if name != "train" and (base / "train").is_dir() and not (base / name).is_dir():
            raise DataError(f"{base}: has no {name}/ sub-folder (--split {name})")
        listing = folder_split(cfg, name)
        classes = classes or list(listing.classes)
        rows = []
        for path, y in zip(listing.files, listing.labels):
            row: dict = {"file": os.path.relpath(path, base)}
            if y >= 0:
                row.update(label=y, **{"class": listing.classes[y]})
            rows.append(row)
        data = _ImageFiles(listing.files, cfg.img_size, mean, std, cfg.strict)
        fp = files_fingerprint(listing.root, listing.files, listing.labels)
        parts.append(_Part(name, data, rows, fp, files=listing.files))
    return parts, classes


def _input_size(model: Any, data_cfg: DataConfig) -> int:
    """The side of the images the backbone takes (a ViT's own), else ``data.img_size``."""
    patch_embed = getattr(model, "patch_embed", None)
    if patch_embed is None:
        return int(data_cfg.img_size)
    size = int(patch_embed.img_size[0])
    if size != int(data_cfg.img_size):
        log.info(
            "images resized to the backbone's %d px (data.img_size %s)", size, data_cfg.img_size
        )
    return size


def _feature_dim(model: Any, features: str, img_size: int) -> int:
    """The width of one embedding (one forward of a blank image)."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return int(
                pool_tokens(model.cpu(), torch.zeros(1, 3, img_size, img_size), features).shape[1]
            )
    finally:
        model.train(was_training)


def _batches(part: _Part, start: int, cfg: EmbedConfig, model: Any) -> Iterator[tuple[Any, Any]]:
    """``(feats [B, D], ok or labels [B])`` of ``part`` from item ``start`` on."""
    from torch.utils.data import DataLoader, Subset

    data, skip = part.data, start
    if part.files is not None:  # decode files in DataLoader workers
        data = DataLoader(
            Subset(part.data, range(start, len(part.data))),
            batch_size=cfg.batch_size,
            num_workers=int(cfg.data.num_workers),
        )
        skip = 0
    yield from iter_features(
        model, data, cfg.features, cfg.batch_size, cfg.precision, cfg.device, start=skip
    )


def _table_writer(parts: list[_Part]):
    """Write the CSV rows of every part (columns: the union, in a fixed order)."""
    order = ("split", "index", "file", "label", "class")
    keys = {k for p in parts for r in p.rows[:1] for k in r}
    columns = [c for c in order if c in keys]

    def write(f) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        for p in parts:
            for r in p.rows:
                w.writerow(r)
                if buf.tell() > 1 << 20:  # flush every MiB: the CSV never sits whole in RAM
                    f.write(buf.getvalue().encode())
                    buf.seek(0)
                    buf.truncate()
        f.write(buf.getvalue().encode())

    return write


def write_embeddings(cfg: EmbedConfig) -> EmbedResult:
    """Write ``OUT.npy`` + ``OUT.csv`` + ``OUT.json`` for a checked config (resumable; see
    module). ``moma embed`` (:func:`moma.commands.embed.run_embed`) validates ``cfg`` first."""
    import numpy as np  # lazy: numpy and tqdm load with the first embedding, not with the CLI
    from tqdm.auto import tqdm  # lazy: as numpy

    out = Path(cfg.out)
    if out.suffix != ".npy":
        raise ConfigError(f"--out {out}: the embeddings file must end in .npy")
    bb = resolve_backbone(cfg.backbone, arch=cfg.arch)
    data_cfg = dataclasses.replace(cfg.data, img_size=_input_size(bb.model, cfg.data))
    parts, classes = _parts(data_cfg, cfg.split)
    total = sum(len(p.rows) for p in parts)
    key = {
        "backbone": bb.identity,
        "features": cfg.features,
        "precision": cfg.precision,
        "img_size": data_cfg.img_size,
        "data": {p.split: p.fingerprint for p in parts},
    }
    store = EmbeddingStore(out, key, overwrite=cfg.overwrite)
    result = EmbedResult(out, store.table, store.meta, total, 0, computed=False)
    if store.is_complete():
        log.info("%s is complete for these inputs; nothing to do", out)
        result.dim = int(np.load(out, mmap_mode="r").shape[1])
        return result
    dim = _feature_dim(bb.model, cfg.features, data_cfg.img_size)
    done = store.open(total, dim)
    bar = tqdm(
        total=total,
        initial=done,
        unit="img",
        desc=f"embed {out.name}",
        disable=not cfg.progress_bar,
    )
    offset = 0
    try:
        for part in parts:
            n = len(part.rows)
            if done >= offset + n:
                offset += n
                continue
            row = max(done - offset, 0)
            for feats, flags in _batches(part, row, cfg, bb.model):
                block = feats.numpy()  # [B, D]
                bad: list[str] = []
                if part.files is not None:
                    missing = (flags == 0).nonzero().flatten().tolist()
                    block[missing] = math.nan
                    bad = [part.rows[row + i]["file"] for i in missing]
                    for name in bad:
                        log.warning("unreadable image %s: its row is NaN", name)
                store.write(offset + row, block, bad)
                row += len(block)
                bar.update(len(block))
            offset += n
    except BaseException:
        store.commit()  # Ctrl-C or an error: keep every row written so far
        raise
    finally:
        bar.close()
    meta = {
        "backbone": bb.spec,
        "backbone_sha256": bb.sha256,
        "dataset": dataset_name(cfg.data),
        "splits": [p.split for p in parts],
        "features": cfg.features,
        "precision": cfg.precision,
        "img_size": data_cfg.img_size,
        "classes": classes,
        "table": store.table.name,
    }
    store.finish(_table_writer(parts), meta)
    if store.unreadable:
        log.warning(
            "%d unreadable image(s) have NaN rows (listed in %s)", len(store.unreadable), store.meta
        )
    log.info("embeddings %s [%d, %d], rows in %s", out, total, dim, store.table)
    result.dim, result.computed = dim, True
    return result
