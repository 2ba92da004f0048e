"""Image bytes -> uint8 RGB tensors with torchvision's decoders (libjpeg-turbo, libpng,
libwebp on the CPU; nvjpeg for batches of JPEGs on a GPU).

Other formats (GIF, BMP, TIFF, PPM, 16-bit PNGs, ...) go through PIL
(`moma.data.image_io.load_rgb`), so every file the PIL path reads is read here too.

Shapes: C = 3 channels, H, W the stored image size.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image, decode_jpeg

from moma.data.image_io import load_rgb

log = logging.getLogger(__name__)

_JPEG = b"\xff\xd8\xff"
_TORCHVISION_MAGIC = (_JPEG, b"\x89PNG", b"RIFF")  # JPEG, PNG, WebP


Encoded = bytes | np.ndarray  # a file's bytes, or them as a 1-D uint8 array


def is_jpeg(data: Encoded) -> bool:
    """Whether ``data`` starts like a JPEG file."""
    return bytes(data[:3]) == _JPEG


def as_tensor(data: Encoded) -> Tensor:
    """The bytes as a 1-D uint8 tensor, what torchvision's decoders take."""
    if isinstance(data, np.ndarray):
        return torch.from_numpy(data)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def decode_rgb(data: Encoded) -> Tensor:
    """Decode an image file's bytes to uint8 ``[3, H, W]`` (grayscale and CMYK converted).

    Raises:
        Exception: whatever the decoder raises for a truncated or corrupt file.
    """
    if bytes(data[:4]).startswith(_TORCHVISION_MAGIC):
        img = decode_image(as_tensor(data), mode=ImageReadMode.RGB)
        if img.dtype == torch.uint8:
            return img
    pil = load_rgb(io.BytesIO(bytes(data)))  # other formats, 16-bit PNGs
    return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)


def image_size(data: bytes) -> tuple[int, int]:
    """``(height, width)`` from the file header, without decoding the pixels."""
    with Image.open(io.BytesIO(data)) as img:
        width, height = img.size
    return height, width


def decode_many(datas: Sequence[Encoded], device: torch.device) -> list[Tensor | None]:
    """Decode files to uint8 ``[3, H, W]`` tensors on ``device``; None where one fails.

    JPEGs are decoded in one batched call on ``device`` (nvjpeg on a GPU); other formats,
    and JPEGs the batched call refuses (e.g. CMYK on a GPU), one by one on the CPU.
    """
    out: list[Tensor | None] = [None] * len(datas)
    jpegs = [i for i, d in enumerate(datas) if is_jpeg(d)]
    if jpegs and device.type == "cuda":
        try:
            imgs = decode_jpeg(
                [as_tensor(datas[i]) for i in jpegs], mode=ImageReadMode.RGB, device=device
            )
            for i, img in zip(jpegs, imgs):
                out[i] = img
        except RuntimeError as err:  # one bad file fails the batch: retry one by one
            log.debug("batched JPEG decode on %s failed (%s); decoding one by one", device, err)
    for i, data in enumerate(datas):
        if out[i] is not None:
            continue
        try:
            out[i] = decode_rgb(data).to(device, non_blocking=True)
        except Exception as err:  # noqa: BLE001 - reported by the caller as a skipped file
            log.debug("undecodable image in batch (%s)", err)
    return out
