"""`DataConfig`: which dataset to read and how to turn it into training batches."""

from dataclasses import dataclass

from moma.errors import ConfigError

FASHION_MNIST_NAMES = ("fashion_mnist", "fashion-mnist", "fashionmnist")
AUGMENTS = ("mae", "mocov3", "none")
SPLITS = ("train", "val", "test")
# `in_memory=None` keeps an image folder in RAM up to this many images.
AUTO_IN_MEMORY_MAX_IMAGES = 20_000
DECODE_MODES = ("auto", "workers", "device", "pil")


@dataclass
class DataConfig:
    """Dataset options shared by pre-training and evaluation.

    Attributes:
        dataset: ``"fashion_mnist"``, a path to an image folder (class sub-folders,
            optionally inside ``train/`` and ``val/``, or a flat folder of unlabelled images),
            or tar shards in WebDataset layout for training: a path, glob or brace pattern
            ending in ``.tar`` (``/data/train-{000000..000146}.tar``), see ``moma.data.shards``.
        root: folder holding the Fashion-MNIST IDX ``.gz`` files. Default: the Debian package
            folder ``/usr/share/datasets/fashion-mnist``, then ``~/.cache/moma/fashion-mnist``
            (where a torchvision download is tried as a last resort).
        img_size: side of the square 3-channel images given to models. Fashion-MNIST's 28 px
            images are used as they are at ``img_size=28``; otherwise they are zero-padded to
            32 px, then resized when ``img_size != 32``.
        batch_size: per-process batch size.
        num_workers: DataLoader workers for image folders (the in-RAM path needs none).
        in_memory: keep decoded images in RAM and augment whole batches on the device;
            ``None`` = yes for Fashion-MNIST and for folders with at most 20000 images.
        strict: an unreadable image raises `DataError` instead of being skipped with a warning.
        min_scale: lower bound of the RandomResizedCrop area scale for ``augment="mae"``.
        subset: use only the first N training images (smoke runs, tests).
        seed: seed of the augmentation and shuffling random generators.
        decode: how streamed images (folders not kept in RAM, shards) are decoded:
            ``workers`` (torchvision's decoders in the DataLoader workers, which cut and flip
            uint8 crops; colour and normalisation per batch on the device), ``device`` (the
            JPEG bytes are decoded on the training device in one batched call: nvjpeg on a
            GPU), ``pil`` (PIL and per-image float transforms in the workers, the old path) or
            ``auto`` (``device`` when training on a GPU, else ``workers``).
        num_samples: samples in the tar shards (counted from local shards' headers when
            null; needed for remote shards).
    """

    dataset: str = "fashion_mnist"
    root: str | None = None
    img_size: int = 32
    batch_size: int = 256
    num_workers: int = 0
    in_memory: bool | None = None
    strict: bool = False
    min_scale: float = 0.2
    subset: int | None = None
    seed: int = 0
    decode: str = "auto"
    num_samples: int | None = None

    def check(self) -> None:
        """Refuse option values that cannot work (:func:`check_config`)."""
        check_config(self)


def is_fashion_mnist(cfg: DataConfig) -> bool:
    """True when ``cfg.dataset`` names Fashion-MNIST rather than an image folder."""
    return str(cfg.dataset).strip().lower() in FASHION_MNIST_NAMES


def check_config(cfg: DataConfig) -> None:
    """Refuse option values that cannot work, naming the option (raises `ConfigError`)."""
    if not str(cfg.dataset).strip():
        raise ConfigError("data.dataset is empty: use 'fashion_mnist' or a path to an image folder")
    if int(cfg.img_size) < 1:
        raise ConfigError(f"data.img_size must be a positive integer, got {cfg.img_size}")
    if int(cfg.batch_size) < 1:
        raise ConfigError(f"data.batch_size must be a positive integer, got {cfg.batch_size}")
    if int(cfg.num_workers) < 0:
        raise ConfigError(f"data.num_workers must be >= 0, got {cfg.num_workers}")
    if not 0.0 < float(cfg.min_scale) <= 1.0:
        raise ConfigError(f"data.min_scale must be in (0, 1], got {cfg.min_scale}")
    if cfg.subset is not None and int(cfg.subset) < 1:
        raise ConfigError(f"data.subset must be a positive integer or null, got {cfg.subset}")
    if cfg.decode not in DECODE_MODES:
        raise ConfigError(f"data.decode must be one of {list(DECODE_MODES)}, got {cfg.decode!r}")
    if cfg.num_samples is not None and int(cfg.num_samples) < 1:
        raise ConfigError(
            f"data.num_samples must be a positive integer or null, got {cfg.num_samples}"
        )
