"""Decode one image file into an 8-bit RGB PIL image, whatever its mode."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)


def is_image_file(name: str) -> bool:
    """True for a visible file whose extension is a known image format."""
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS


def _wide_to_8bit(img: Image.Image) -> Image.Image:
    """16-bit integer or float grayscale -> 8-bit "L" (full range mapped to 0..255)."""
    arr = np.nan_to_num(np.asarray(img).astype(np.float64))
    peak = float(arr.max(initial=0.0))
    if img.mode == "F":
        arr = arr * 255.0 if peak <= 1.0 else arr
    elif img.mode.startswith("I;16") or 255 < peak <= 65535:  # 16-bit values
        arr = arr / 257.0
    elif peak > 65535:
        arr = arr * (255.0 / peak)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))  # 2-D uint8 -> "L"


def load_rgb(path: str | Path | BinaryIO, draft_size: int | None = None) -> Image.Image:
    """Fully decode ``path`` into an 8-bit RGB image.

    Grayscale, 1-bit, palette (with or without transparency), RGBA/LA, CMYK and 16-bit images
    are converted (alpha is dropped, as torchvision's ImageFolder does).

    Args:
        path: image file (or an open binary file object).
        draft_size: when set, a JPEG may be decoded at a reduced scale that still keeps both
            sides >= this many pixels (much faster for large photos that are resized anyway).

    Raises:
        Exception: whatever PIL raises for an unreadable, truncated or unknown file
            (OSError, SyntaxError, ValueError, ...); callers turn it into a skip or DataError.
    """
    with Image.open(path) as img:
        if draft_size is not None and img.format == "JPEG":
            img.draft("RGB", (draft_size, draft_size))
        img.load()  # full decode here: a truncated file fails now, not later
        if img.mode in ("I", "F") or img.mode.startswith("I;16"):
            img = _wide_to_8bit(img)
        elif img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")
        return img.convert("RGB") if img.mode != "RGB" else img.copy()
