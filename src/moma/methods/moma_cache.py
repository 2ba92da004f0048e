"""The teacher-target cache of a MOMA run: keys, the build, and the Lightning callback.

Every frozen teacher runs once per training image per cached view (``cache.views = K``),
in inference mode, at a large batch; its targets (what :meth:`MomaMethod.teacher_output`
returns) go into a :class:`~moma.methods.target_store.TargetStore` keyed by everything that
determines them. Training then reads them back for the view each image uses in each epoch
(`moma.data.keyed_views`) and the teachers never run again. One store per teacher, so runs
that share a teacher (the quickstart's mechanisms do) share its store.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
import numpy as np
import torch
from torch import Tensor

from moma.data.fingerprint import split_fingerprint
from moma.errors import ConfigError
from moma.methods.moma_config import CacheConfig
from moma.methods.moma_teachers import TeacherTargets
from moma.methods.target_store import StoreLayout, TargetStore, free_bytes, key_digest
from moma.moved import forwarder
from moma.run_folder import RunFolder, RunLock, atomic_write_text

if TYPE_CHECKING:
    from moma.data.datamodule import SSLDataModule
    from moma.methods.moma import MomaMethod

log = logging.getLogger(__name__)
__getattr__ = forwarder(__name__)  # the cache's run entry moved to moma.commands.distill

CHUNK_IMAGES = 2048  # at most this many images per chunk: the unit of resumption and checks
MIN_CHUNKS = 16  # small data sets still get this many chunks (resumption, DDP shares)
KEY_VERSION = 1  # bump when what a target means changes (it invalidates every store)


def cache_dir(cfg: CacheConfig, out_dir: str | Path) -> Path:
    """Where the stores live: ``cfg.dir``, else ``targets/`` beside the run's folder."""
    if cfg.dir:
        return Path(cfg.dir).expanduser()
    return Path(out_dir).expanduser().resolve().parent / "targets"


def autocast_name(context: AbstractContextManager) -> str:
    """The compute dtype a precision context runs matmuls in (part of the key)."""
    dtype = getattr(context, "fast_dtype", None)
    enabled = getattr(context, "_enabled", dtype is not None)
    return str(dtype).replace("torch.", "") if dtype is not None and enabled else "float32"


def teacher_key(
    module: MomaMethod, i: int, dm: SSLDataModule, cfg: CacheConfig, compute: str, data: str
) -> dict:
    """What determines teacher ``i``'s cached targets (``data``: the training split's
    fingerprint, :func:`~moma.data.fingerprint.split_fingerprint`)."""
    kinds = [k for k, on in (("cls", module.use_cls), ("patch", module.use_patch)) if on]
    return {
        "version": KEY_VERSION,
        "teacher_sha256": module.teacher_records[i]["sha256"],
        "teacher_input": list(module.branch(i).img_size),
        "data": data,
        "view_recipe": dm.keyed_description(),
        "views": int(cfg.views),
        "kinds": kinds,
        # patch targets are stored on the student's grid
        "patch_grid": list(module.student_grid) if module.use_patch else None,
        "compute": compute,
        "dtype": cfg.dtype,
    }


def _layout(module: MomaMethod, i: int, num_images: int, cfg: CacheConfig) -> StoreLayout:
    dim = int(module.branch(i).teacher.embed_dim)
    kinds: dict[str, tuple[int, ...]] = {}
    if module.use_cls:
        kinds["cls"] = (dim,)
    if module.use_patch:
        h, w = module.student_grid
        kinds["patch"] = (h * w, dim)
    # A function of the data size alone: a store built by one process is reused by N.
    chunk = min(CHUNK_IMAGES, max(1, -(-num_images // MIN_CHUNKS)))
    return StoreLayout(num_images, int(cfg.views), kinds, cfg.dtype, chunk)


def _first_batch_size(cfg: CacheConfig, device: torch.device) -> int:
    if cfg.batch_size:
        return int(cfg.batch_size)
    return 4096 if device.type == "cuda" else 1024


class TeacherRunner:
    """Teacher ``i``'s targets on the keyed views of a range of images, batch by batch
    (the views come from the datamodule, exactly as training regenerates them).

    On a GPU an out-of-memory batch is halved and the view retried, so the build runs at the
    largest batch that fits.
    """

    def __init__(
        self,
        module: MomaMethod,
        dm: SSLDataModule,
        device: torch.device,
        precision: Callable[[], AbstractContextManager],
        batch_size: int,
    ) -> None:
        self.module, self.dm, self.device = module, dm, device
        self.precision, self.batch_size = precision, batch_size

    def chunk(self, i: int, a: int, b: int, layout: StoreLayout) -> dict[str, Tensor]:
        """Targets of images ``[a, b)`` on every view: kind -> ``[b - a, K, ...]`` (rows of
        images a streamed folder could not read stay zero; training never asks for them)."""
        out = {k: torch.zeros(b - a, layout.views, *shape) for k, shape in layout.kinds.items()}
        for k in range(layout.views):
            while True:
                try:
                    self._view(i, a, b, k, out)
                    break
                except torch.OutOfMemoryError:
                    if self.batch_size == 1:
                        raise
                    self.batch_size //= 2
                    log.info("target cache: out of memory, teacher batch now %d", self.batch_size)
                    torch.cuda.empty_cache()
        return out

    def _view(self, i: int, a: int, b: int, k: int, out: dict[str, Tensor]) -> None:
        batches = self.dm.keyed_batches(a, b, k, self.batch_size, self.device)
        for index, x in batches:
            with torch.inference_mode(), self.precision():
                t: TeacherTargets = self.module.teacher_output(i, x)
            rows = (index - a).cpu()
            if t.cls is not None:
                out["cls"][rows, k] = t.cls.float().cpu()  # [n, D]
            if t.patches is not None:
                out["patch"][rows, k] = t.patches.float().cpu()  # [n, L, D]


def prepare_stores(
    module: MomaMethod,
    dm: SSLDataModule,
    cfg: CacheConfig,
    root: Path,
    device: torch.device,
    precision: Callable[[], AbstractContextManager] = nullcontext,
    rank: int = 0,
    world: int = 1,
    barrier: Callable[[], None] = lambda: None,
    progress: bool = True,
) -> list[dict]:
    """Open, check and (where needed) build every teacher's store; returns one record per
    teacher: ``{"store", "folder", "built_chunks", "seconds", ...}``.

    Rank 0 validates each store (key, sizes, every chunk's digest) and creates or repairs
    it; then each rank builds its share of the missing chunks; a store is complete when
    every rank is done (``barrier``).
    """
    num_images = dm.num_train_images()
    compute = autocast_name(precision())
    data = split_fingerprint(dm.cfg, "train")  # once: it stats every file of the split
    runner = TeacherRunner(module, dm, device, precision, _first_batch_size(cfg, device))
    records = []
    for i, name in enumerate(module.teacher_names):
        t0 = time.perf_counter()
        key = teacher_key(module, i, dm, cfg, compute, data)
        layout = _layout(module, i, num_images, cfg)
        digest = key_digest(key)[:16]
        folder = root / digest
        lock = RunLock(root / "locks" / digest)  # beside the store: a rebuild replaces it
        if rank == 0:
            lock.acquire()
        try:
            if rank == 0:
                _open_or_create(folder, key, layout, name, module.teacher_records[i])
            barrier()
            store, why = TargetStore.open(folder, key, layout)
            if store is None:
                raise ConfigError(f"target cache {folder}: {why}")
            done = store.finished_chunks()
            todo = [c for c in range(layout.num_chunks) if c % world == rank and c not in done]
            if todo:
                _build(store, runner, i, name, todo, progress and rank == 0)
            barrier()
            missing = layout.num_chunks - len(store.finished_chunks())
            if missing:
                raise ConfigError(
                    f"target cache {folder}: {missing} chunk(s) missing after the build"
                )
        finally:
            lock.release()
        seconds = time.perf_counter() - t0
        how = f"built {len(todo)} of {layout.num_chunks} chunks" if todo else "reused"
        log.info("target cache for teacher %r: %s, %s in %.1f s", name, folder, how, seconds)
        records.append(
            {
                "teacher": name,
                "store": store,
                "folder": str(folder),
                "built_chunks": len(todo),
                "chunks": layout.num_chunks,
                "seconds": round(seconds, 2),
            }
        )
    return records


def _open_or_create(folder: Path, key: dict, layout: StoreLayout, name: str, record: dict) -> None:
    """Rank 0: make ``folder`` a sound store for ``key`` (created, repaired or as it was)."""
    store, why = TargetStore.open(folder, key, layout)
    if store is None:
        if folder.exists():
            log.warning("target cache %s cannot be used (%s): rebuilding it", folder, why)
        need = sum(layout.nbytes(k) for k in layout.kinds)
        if free_bytes(folder) < need:
            raise ConfigError(
                f"target cache {folder}: needs {need / 2**30:.2f} GiB, the disk has "
                f"{free_bytes(folder) / 2**30:.2f} GiB free (set cache.dir elsewhere, or fewer "
                "cache.views)"
            )
        info = {"teacher": name, "teacher_path": record.get("path")}
        TargetStore.create(folder, key, layout, info)
        return
    bad = store.verify()
    if bad:
        log.warning(
            "target cache %s: %d chunk(s) failed their sha256 check (%s): recomputing them",
            folder,
            len(bad),
            ", ".join(map(str, bad[:8])) + (" ..." if len(bad) > 8 else ""),
        )


def _build(
    store: TargetStore, runner: TeacherRunner, i: int, name: str, todo: list[int], progress: bool
) -> None:
    from tqdm.auto import tqdm

    layout = store.layout
    images = sum(b - a for a, b in map(layout.chunk_range, todo)) * layout.views
    bar = tqdm(
        total=images, unit="img", desc=f"teacher {name} targets", disable=not progress, leave=False
    )
    with bar:
        for c in todo:
            a, b = layout.chunk_range(c)
            store.write_chunk(c, runner.chunk(i, a, b, layout))
            bar.update((b - a) * layout.views)


class StoreLookup:
    """``(index [N], view [N]) -> [TeacherTargets per teacher]`` on the batch's device."""

    def __init__(self, stores: list[TargetStore]) -> None:
        self.stores = stores

    def __call__(self, index: Tensor, view: Tensor) -> list[TeacherTargets]:
        idx, v = index.cpu().numpy().astype(np.int64), view.cpu().numpy().astype(np.int64)
        out = []
        for store in self.stores:
            got = store.lookup(idx, v)
            cls, patch = got.get("cls"), got.get("patch")
            out.append(
                TeacherTargets(
                    cls.to(index.device, non_blocking=True) if cls is not None else None,
                    patch.to(index.device, non_blocking=True) if patch is not None else None,
                )
            )
        return out


class TargetCache(L.Callback):
    """Builds or opens the teachers' target stores when fitting starts and gives the
    datamodule their lookup; the run then never calls its teachers. Writes
    ``OUT/target_cache.json`` (which stores, built or reused, how long). Holds no state that
    goes into a checkpoint."""

    def __init__(self, cfg: CacheConfig, root: Path, out_dir: Path, progress: bool = True) -> None:
        self.cfg, self.root, self.out_dir, self.progress = cfg, Path(root), Path(out_dir), progress

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        strategy = trainer.strategy
        t0 = time.perf_counter()
        records = prepare_stores(
            pl_module,
            dm,
            self.cfg,
            self.root,
            pl_module.device,
            precision=trainer.precision_plugin.forward_context,
            rank=trainer.global_rank,
            world=trainer.world_size,
            barrier=strategy.barrier,
            progress=self.progress,
        )
        dm.attach_targets(StoreLookup([r["store"] for r in records]))
        pl_module.cache_build_s = time.perf_counter() - t0
        if trainer.is_global_zero:
            summary = {
                "views": int(self.cfg.views),
                "seconds": round(pl_module.cache_build_s, 2),
                "teachers": [{k: v for k, v in r.items() if k != "store"} for r in records],
            }
            record = RunFolder(self.out_dir).target_cache_record
            atomic_write_text(record, json.dumps(summary, indent=1))


def precision_context(precision: str, device: torch.device) -> Callable[[], AbstractContextManager]:
    """The forward context Lightning uses for ``trainer.precision`` on ``device`` (so a
    store built outside a fit has the key and the values of one built inside it)."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    if str(precision) in ("bf16-mixed", "16-mixed"):
        return MixedPrecision(str(precision), device.type).forward_context
    return nullcontext


def run_device(accelerator: str) -> torch.device:
    """The device a single-process run of ``trainer.accelerator`` trains on."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", 0)
    return torch.device("cpu")
