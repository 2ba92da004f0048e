"""Fixtures shared by the whole suite: the tiny backbone every test builds its ViTs from.

The tiny backbone itself is :data:`toy.TINY` (one definition: 2 blocks x 32 dims, 2 heads,
16 px images in patches of 4); module-level helpers import it from there, test functions take
these fixtures.
"""

import dataclasses
from collections.abc import Callable

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from toy import TINY

from moma.models.vit import BackboneConfig

# One intra-op thread: tiny test models are overhead-bound, and a second thread only
# contends with the DDP subprocesses some tests start (measured ~3x slower with 2).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny() -> BackboneConfig:
    """The tiny backbone's config (a copy: a test may change it)."""
    return dataclasses.replace(TINY)


@pytest.fixture
def tiny_vit(tiny) -> Callable[..., VisionTransformer]:
    """``tiny_vit(**changes)``: a freshly initialised tiny ViT (``changes`` replace config
    fields, e.g. ``depth=1``)."""
    return lambda **changes: dataclasses.replace(tiny, **changes).build()
