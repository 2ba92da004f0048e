"""FLOP counting (``torch.utils.flop_counter``) and the machine's measured matmul peak.

FLOPs are counted, not estimated: one step runs under ``FlopCounterMode``, which sums the
matmul, convolution and attention FLOPs of every aten op (forward and backward). Element-wise
work (norms, activations, the optimiser) is not counted, as is usual. PyTorch ships no
formula for the CPU flash-attention kernels that ``scaled_dot_product_attention`` dispatches
to on the CPU; they are registered here with the formulas of the GPU kernels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from moma.bench.timing import Timing, time_steps

_aten = torch.ops.aten


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, **kwargs):
    return flop_counter.sdpa_backward_flop_count(
        grad_out_shape, query_shape, key_shape, value_shape
    )


def _custom_mapping() -> dict[Any, Callable[..., int]]:
    mapping: dict[Any, Callable[..., int]] = {}
    fwd = getattr(_aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    bwd = getattr(_aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if fwd is not None:
        mapping[fwd] = _cpu_sdpa_flops
    if bwd is not None:
        mapping[bwd] = _cpu_sdpa_backward_flops
    return mapping


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` (matmuls, convolutions, attention; forward + backward)."""
    with FlopCounterMode(display=False, custom_mapping=_custom_mapping()) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_peak(
    device: torch.device, dtype: torch.dtype, n: int = 2048, steps: int = 10, warmup: int = 2
) -> tuple[float, Timing]:
    """FLOP/s of an ``n x n @ n x n`` matmul in ``dtype``: the reference peak.

    Returns the FLOP/s of the fastest repeat (a peak is what the machine can do; on a shared
    machine the median is what the neighbours left) and the per-step timing.
    """
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    timing = time_steps(lambda: torch.mm(a, b), steps, warmup, device)
    return 2.0 * n**3 / min(timing.seconds), timing
