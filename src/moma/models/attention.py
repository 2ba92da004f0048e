"""Which attention kernel the timm ViTs run, chosen per device.

timm's ``Attention`` calls ``F.scaled_dot_product_attention`` when its ``fused_attn`` flag is
set (timm's default), else the plain ``softmax(q @ k^T) @ v``. On a GPU the fused call is a
flash / memory-efficient kernel and the clear choice. On the CPU it runs torch's CPU
flash-attention kernel, whose bf16 backward is slow at ViT sizes: on the project's 2-core
machine the plain path made a bf16 6x192 ViT forward+backward (32 px, batch 256) 30% faster
and a ViT-S/16 one (224 px, batch 16) 17% faster, with equal fp32 times (BENCHMARKS.md).
``auto`` therefore means fused on CUDA and plain ("math") on the CPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from moma.errors import ConfigError

ATTENTION_MODES = ("auto", "fused", "math")


def use_fused_attention(device: torch.device | str, mode: str = "auto") -> bool:
    """Whether ``mode`` (``auto`` | ``fused`` | ``math``) means the fused kernel on ``device``."""
    if mode not in ATTENTION_MODES:
        raise ConfigError(f"attention must be one of {ATTENTION_MODES}, got {mode!r}")
    if mode == "auto":
        return torch.device(device).type != "cpu"
    return mode == "fused"


def set_attention(module: nn.Module, device: torch.device | str, mode: str = "auto") -> dict:
    """Set ``fused_attn`` on every timm attention layer inside ``module`` for ``device``.

    Returns the previous flags (``{submodule: bool}``), for :func:`restore_attention`.
    """
    fused = use_fused_attention(device, mode)
    before = {}
    for m in module.modules():
        if isinstance(getattr(m, "fused_attn", None), bool):
            before[m] = m.fused_attn
            m.fused_attn = fused
    return before


def restore_attention(before: dict) -> None:
    """Undo :func:`set_attention`."""
    for m, flag in before.items():
        m.fused_attn = flag


@contextlib.contextmanager
def attention_kernel(
    module: nn.Module, device: torch.device | str, mode: str = "auto"
) -> Iterator[None]:
    """Within the block, ``module``'s attention layers use the kernel ``mode`` picks on ``device``."""
    before = set_attention(module, device, mode)
    try:
        yield
    finally:
        restore_attention(before)
