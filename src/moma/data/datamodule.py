"""`SSLDataModule`: training batches for pre-training and distillation.

Two paths:
- in RAM (Fashion-MNIST; folders up to 20000 images unless ``in_memory`` says otherwise): the
  DataLoader yields uint8 batches from a `TensorDataset`, and `on_after_batch_transfer`
  augments each whole batch on the device (`BatchAugment`);
- streaming (larger folders, or ``in_memory=False``; tar shards): DataLoader workers decode
  each image with torchvision's decoders and cut (and flip) uint8 crops, which are colour-
  augmented and normalised per batch on the device (`moma.data.device_views`); with
  ``decode="device"`` the JPEGs themselves are decoded there; ``decode="pil"`` keeps the
  old per-image PIL + torchvision v2 pipeline, whose batches arrive already normalised.
Either way a batch reaching the model is ``(imgs [N, 3, S, S], labels [N])`` for one view and
``([v1, v2], labels)`` for two.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from moma.data.batch_augment import BatchAugment
from moma.data.config import AUGMENTS, DataConfig, check_config, is_fashion_mnist
from moma.data.crop_stream import CropFileDataset, resolve_decode
from moma.data.crops import make_cropper
from moma.data.device_views import CropBatch, DeviceViews, JpegBatch
from moma.data.file_dataset import ImageFileDataset, decode_to_tensor
from moma.data.keyed_stream import KeyedCropBatch, KeyedCropFileDataset
from moma.data.keyed_views import KeyedViews, view_schedule
from moma.data.recipes import view_recipes
from moma.data.resumable import ResumableLoader, ResumableSampler
from moma.data.shards import ShardDataset, count_samples, expand_shards, is_shard_spec
from moma.data.splits import dataset_stats, fashion_mnist_split, folder_split, use_in_memory
from moma.data.tensor_dataset import TensorPILDataset
from moma.data.transforms import train_transform
from moma.errors import ConfigError, DataError

log = logging.getLogger(__name__)

_RANK_SEED_STRIDE = 1_000_003


class SSLDataModule(L.LightningDataModule):
    """Shuffled training batches of ``views`` augmented views per image.

    Args:
        cfg: dataset options.
        views: 1 (MAE, MOMA) or 2 (MoCo v3).
        augment: ``"mae"`` (RandomResizedCrop(scale=(min_scale, 1), bicubic) + flip),
            ``"mocov3"`` (BYOL-style asymmetric views: crop (0.08, 1), flip, colour jitter
            p=0.8, grayscale p=0.2, blur p=1.0/0.1, solarise p=0/0.2) or ``"none"``
            (resize + normalise only, deterministic).

    Attributes:
        batch_size: per-process batch size.
        mean, std: the normalisation (3 values each).
        in_memory: which path `setup` chose (None before it).

    Used outside a Lightning Trainer, an in-RAM batch must go through
    ``on_after_batch_transfer(batch, 0)`` (or `augment_batch`) after moving it to the device.

    Keyed views (``keyed_views=K > 0``, the teacher-target cache): one view per image, a
    pure function of ``(seed, image index, view index)`` (`moma.data.keyed_views`); in epoch
    ``e`` image ``i`` uses view `view_schedule` ``(seed, e, i, K)``, and a batch is
    ``(imgs, labels, targets)`` with ``targets = lookup(index, view)`` from the function given
    to `attach_targets`. Needs the training images in RAM.
    """

    def __init__(
        self, cfg: DataConfig, views: int = 1, augment: str = "mae", keyed_views: int = 0
    ) -> None:
        super().__init__()
        check_config(cfg)
        if views not in (1, 2):
            raise ConfigError(f"views must be 1 or 2, got {views}")
        if augment not in AUGMENTS:
            raise ConfigError(f"augment must be one of {list(AUGMENTS)}, got {augment!r}")
        self.cfg, self.views, self.augment = cfg, views, augment
        self.batch_size = int(cfg.batch_size)
        self.mean, self.std = dataset_stats(cfg)
        self.in_memory: bool | None = None
        self._train: Dataset | None = None
        self._augmenter: BatchAugment | None = None
        self._views: DeviceViews | None = None  # streamed crops -> views on the device
        self._skip_epoch: int | None = None  # epoch of the last skipped-files report
        self._skip_reported = 0
        # position of the training steps: epoch, batches of it consumed (for an exact resume)
        self._epoch, self._consumed = 0, 0
        self._sampler: ResumableSampler | None = None
        self.keyed_views = int(keyed_views)
        self._keyed: KeyedViews | None = None
        self._lookup: Callable[[Tensor, Tensor], Any] | None = None
        if self.keyed_views and views != 1:
            raise ConfigError("keyed (cached) views are single views: views must be 1")

    # ----------------------------------------------------------------- datasets
    def setup(self, stage: str | None = None) -> None:
        """Read (or list) the training images once; later calls do nothing."""
        if self._train is None:
            self._train = self._build_train_set()
            if len(self._train) < self.batch_size:
                raise DataError(
                    f"{self.cfg.dataset}: {len(self._train)} training images, fewer than "
                    f"data.batch_size={self.batch_size} (the last partial batch is dropped)"
                )

    def _build_train_set(self) -> Dataset:
        cfg = self.cfg
        transform = train_transform(
            self.augment, self.views, cfg.img_size, cfg.min_scale, self.mean, self.std
        )
        if is_fashion_mnist(cfg):
            images, labels = fashion_mnist_split(cfg, "train")
            self.in_memory = cfg.in_memory is not False
            if self.in_memory:
                return self._in_ram(images, labels)
            self._refuse_keyed_streaming()
            return TensorPILDataset(images, labels, transform)
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        decode = resolve_decode(cfg.decode, device)
        cropper = make_cropper(self.augment, self.views, cfg.img_size, cfg.min_scale)
        if is_shard_spec(cfg.dataset):
            self.in_memory = False
            self._refuse_keyed_streaming()
            shards = expand_shards(cfg.dataset)
            n = cfg.num_samples or count_samples(shards)
            world = trainer.world_size if trainer is not None else 1
            return ShardDataset(shards, n, cropper, cfg.seed, self.batch_size, cfg.num_workers,
                                self._rank(), world, cfg.strict, encoded=decode == "device")  # fmt: skip
        listing = folder_split(cfg, "train")
        self.in_memory = use_in_memory(cfg, len(listing.files))
        if self.in_memory:
            images, labels = decode_to_tensor(
                listing.files,
                listing.labels,
                cfg.img_size,
                cfg.strict,
                cfg.num_workers,
                where=str(listing.root),
            )
            return self._in_ram(images, labels)
        if self.keyed_views:  # decoded and cropped in the workers, one keyed view per image
            one_view = make_cropper(self.augment, 1, cfg.img_size, cfg.min_scale)
            return KeyedCropFileDataset(listing.files, listing.labels, one_view, cfg.seed,
                                        self.keyed_views, cfg.strict)  # fmt: skip
        if decode != "pil":
            return CropFileDataset(listing.files, listing.labels, cropper, cfg.seed, cfg.strict,
                                   encoded=decode == "device")  # fmt: skip
        return ImageFileDataset(listing.files, listing.labels, transform, cfg.strict)

    def _in_ram(self, images: Tensor, labels: Tensor) -> TensorDataset:
        """uint8 images in RAM; keyed views also need each image's index."""
        if self.keyed_views:
            return TensorDataset(images, labels, torch.arange(len(images)))
        return TensorDataset(images, labels)

    def _refuse_keyed_streaming(self) -> None:
        if self.keyed_views:
            raise ConfigError(
                f"{self.cfg.dataset}: cached teacher targets (cache.views > 0) need random "
                "access to the images (in RAM or an image folder); tar shards and "
                "data.in_memory false for Fashion-MNIST are not supported"
            )

    def train_images(self) -> Tensor:
        """The in-RAM training images, uint8 ``[N, C, h, w]`` (after `setup`)."""
        self.setup("fit")
        if not self.in_memory:
            raise ConfigError(f"{self.cfg.dataset}: the training images are not held in RAM")
        return self._train.tensors[0]

    def num_train_images(self) -> int:
        """How many training images there are (after `setup`)."""
        self.setup("fit")
        return len(self._train)

    def keyed_description(self) -> dict:
        """What determines the keyed views (part of a target-cache key)."""
        self.setup("fit")
        if isinstance(self._train, KeyedCropFileDataset):
            return self._train.describe(self.mean, self.std)
        return self.keyed.describe()

    def keyed_batches(
        self, a: int, b: int, view: int, batch_size: int, device: torch.device
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """``(index [n], views [n, 3, S, S])`` on ``device``: view ``view`` of images
        ``[a, b)``, batch by batch, exactly as training regenerates them (the cache build).
        A streamed folder is read by ``data.num_workers`` workers; an unreadable image is
        replaced by the next one, with that one's index."""
        self.setup("fit")
        if self.in_memory:
            images = self.train_images()
            for s in range(a, b, batch_size):
                index = torch.arange(s, min(b, s + batch_size), device=device)
                x = images[s : s + len(index)].to(device, non_blocking=True)
                yield index, self.keyed(x, index, torch.full_like(index, view))
            return
        workers = int(self.cfg.num_workers)
        loader = DataLoader(
            self._train,
            batch_size=batch_size,
            sampler=[(view, i) for i in range(a, b)],
            num_workers=workers,
            collate_fn=self._train.collate,
        )
        for batch in loader:
            batch = KeyedCropBatch(
                *(t.to(device, non_blocking=True) for t in dataclasses.astuple(batch))
            )
            x, _ = self._device_views(batch)
            yield batch.index, x

    def _device_views(self, batch: CropBatch | JpegBatch) -> tuple[Tensor | list[Tensor], Tensor]:
        if self._views is None:
            self._views = DeviceViews(self._train.cropper, self.mean, self.std,
                                      strict=self.cfg.strict)  # fmt: skip
        return self._views(batch)

    @property
    def keyed(self) -> KeyedViews:
        """The keyed view generator: the same views for the cache build and for training."""
        if self._keyed is None:
            recipe = (
                None
                if self.augment == "none"
                else view_recipes(self.augment, 1, self.cfg.min_scale)[0]
            )
            self._keyed = KeyedViews(recipe, self.cfg.img_size, self.mean, self.std, self.cfg.seed)
        return self._keyed

    def attach_targets(self, lookup: Callable[[Tensor, Tensor], Any]) -> None:
        """Keyed views: ``lookup(index [N], view [N])`` gives a batch's targets (on its device)."""
        self._lookup = lookup

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches of ``batch_size``, last partial batch dropped; under DDP each
        rank reads its own share. Resumable mid-epoch (``moma.data.resumable``)."""
        self.setup("fit")
        workers = 0 if self.in_memory else int(self.cfg.num_workers)
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        # tar shards split themselves over processes and workers: no sampler
        sampler_class = getattr(self._train, "sampler_class", ResumableSampler)
        iterable = isinstance(self._train, IterableDataset)
        seed = int(self.cfg.seed)
        self._sampler = None if iterable else sampler_class(self._train, seed, rank, world)
        return ResumableLoader(
            self._train,
            batch_size=self.batch_size,
            sampler=self._sampler,
            drop_last=True,
            num_workers=workers,
            persistent_workers=workers > 0,
            collate_fn=getattr(self._train, "collate", None),
            # a private generator: the loader's worker seeds never draw from the global RNG
            generator=torch.Generator().manual_seed(int(self.cfg.seed)),
            state_fn=self.loader_state,
            restore_fn=self.load_loader_state,
        )

    def loader_state(self) -> dict:
        """Where the training steps are: ``{"epoch", "batches"}`` (batches of that epoch)."""
        return {"epoch": self._epoch, "batches": self._consumed}

    def load_loader_state(self, state: dict) -> None:
        """Continue after ``state["batches"]`` batches of ``state["epoch"]``."""
        self._epoch, self._consumed = int(state["epoch"]), int(state["batches"])
        if self._sampler is not None:
            self._sampler.skip(self._epoch, self._consumed * self.batch_size)

    def _count_batch(self) -> int:
        """Count a batch reaching a training step; returns its index within the epoch."""
        trainer = self.trainer
        epoch = int(trainer.current_epoch) if trainer is not None else self._epoch
        if epoch != self._epoch:
            self._epoch, self._consumed = epoch, 0
        self._consumed += 1
        return self._consumed - 1

    # ------------------------------------------------------------- augmentation
    def _rank(self) -> int:
        trainer = self.trainer
        return int(trainer.global_rank) if trainer is not None else 0

    def _process_seed(self) -> int:
        """``cfg.seed`` made distinct per DDP rank."""
        return int(self.cfg.seed) + _RANK_SEED_STRIDE * self._rank()

    def _batch_seed(self, index: int) -> int:
        return ((self._process_seed() * 1_000_033 + self._epoch) * 1_000_037 + index) % (1 << 62)

    def augment_batch(self, images: Tensor, batch_seed: int | None = None) -> Tensor | list[Tensor]:
        """Augment a uint8 batch ``[N, C, H, W]`` on its device: a tensor, or a list of views.

        Each process draws from its own generator, seeded with ``cfg.seed`` and its rank, or
        re-seeded with ``batch_seed`` for this batch.
        """
        if self._augmenter is None:
            self._augmenter = BatchAugment(
                self.augment,
                self.views,
                self.cfg.img_size,
                self.cfg.min_scale,
                self.mean,
                self.std,
                seed=self._process_seed(),
            )
        if batch_seed is not None:
            self._augmenter.reseed(batch_seed)
        return self._augmenter(images)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """In-RAM path: uint8 images -> augmented, normalised float view(s), on the device.

        The augmentation of each batch is seeded from (seed, rank, epoch, batch index), so a
        resumed run augments its remaining batches as the uninterrupted run would have.
        """
        index = self._count_batch()
        if self.keyed_views:
            return self._keyed_batch(batch)
        if isinstance(batch, CropBatch | JpegBatch):
            self._device_views(batch)  # builds the device views once
            self._views.reseed(self._batch_seed(index))
            self._report_skipped(at_end=False)
            return self._views(batch)
        imgs, labels = batch
        if isinstance(imgs, Tensor) and imgs.dtype == torch.uint8:
            views = self.augment_batch(imgs, batch_seed=self._batch_seed(index))
            return views, labels
        self._report_skipped(at_end=False)
        return batch

    def _keyed_batch(self, batch: Any) -> tuple[Tensor, Tensor, Any]:
        """In RAM ``(uint8 imgs, labels, index)``, streamed a `KeyedCropBatch` -> ``(views,
        labels, targets)`` of this epoch's views."""
        if self._lookup is None:
            raise ConfigError("keyed views need their targets: call attach_targets first")
        if isinstance(batch, KeyedCropBatch):  # cropped in the workers with its view
            views, labels = self._device_views(batch)
            self._report_skipped(at_end=False)
            return views, labels, self._lookup(batch.index, batch.view)
        imgs, labels, index = batch
        view = view_schedule(int(self.cfg.seed), self._epoch, index, self.keyed_views)  # [N]
        return self.keyed(imgs, index, view), labels, self._lookup(index, view)

    # -------------------------------------------------------- unreadable files
    @property
    def skipped_images(self) -> int:
        """Unreadable files skipped so far by the streaming path (all workers)."""
        on_device = self._views.num_skipped if self._views is not None else 0
        return getattr(self._train, "num_skipped", 0) + on_device

    def _report_skipped(self, at_end: bool) -> None:
        """Warn about files skipped in the epoch that just ended (seen at the first batch of
        the next one, or at teardown)."""
        if not isinstance(self._train, ImageFileDataset | ShardDataset):
            return
        trainer = self.trainer
        epoch = int(trainer.current_epoch) if trainer is not None else 0
        if epoch == self._skip_epoch and not at_end:
            return
        finished = self._skip_epoch if not at_end else epoch
        self._skip_epoch = epoch
        total = self.skipped_images
        if finished is None or total == self._skip_reported:
            return
        new, self._skip_reported = total - self._skip_reported, total
        warnings.warn(
            f"{self.cfg.dataset}: skipped {new} unreadable image(s) in epoch {finished} "
            f"(each named in an earlier warning; strict=True makes this an error)",
            stacklevel=3,
        )

    def teardown(self, stage: str) -> None:
        """Report unreadable files skipped since the last report."""
        self._report_skipped(at_end=True)
