"""MoCo v3's contrastive loss: InfoNCE against the keys of the whole global batch."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


def dist_ready() -> bool:
    """True inside an initialised process group (the guard around every collective)."""
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` without a process group."""
    if dist_ready():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@torch.no_grad()
def concat_all_gather(x: Tensor) -> Tensor:
    """Concatenate ``x [N, ...]`` of every process along dim 0 -> ``[world * N, ...]``.

    No gradient flows through the result (the keys come from the momentum encoder anyway).
    Without a process group it returns ``x`` itself.
    """
    if not dist_ready() or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


class MoCoV3Loss(nn.Module):
    """Symmetric InfoNCE of MoCo v3, ``ctr(q1, k2) + ctr(q2, k1)``.

    ``ctr(q, k) = CE(q_n @ all_gather(k_n).T / T, labels = arange(N) + N * rank) * 2T``
    with ``q_n, k_n`` the L2-normalised rows. The keys of all processes are the negatives
    (so the batch of negatives is the global batch); gradients flow only into the local
    queries. The ``2T`` factor makes the gradient scale independent of the temperature.

    Inputs:
        q1, q2: predictor outputs of view 1 and view 2, ``[N, C]`` (with gradient).
        k1, k2: momentum-projector outputs of view 1 and view 2, ``[N, C]`` (no gradient).

    Output: a scalar. Computed in float32 with autocast off (``N x world N`` logits).
    """

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"the temperature must be positive, got {temperature}")
        self.temperature = float(temperature)

    def contrastive(self, q: Tensor, k: Tensor) -> Tensor:
        """One direction: queries ``q [N, C]`` against gathered keys ``k [N, C]``."""
        with torch.autocast(device_type=q.device.type, enabled=False):
            q = F.normalize(q.float(), dim=1)  # [N, C]
            k = F.normalize(k.detach().float(), dim=1)  # [N, C]
            k = concat_all_gather(k)  # [world * N, C]
            logits = q @ k.T / self.temperature  # [N, world * N]
            rank, _ = rank_and_world()
            n = q.shape[0]
            labels = torch.arange(n, device=q.device) + n * rank  # [N]
            return F.cross_entropy(logits, labels) * (2 * self.temperature)

    def forward(self, q1: Tensor, q2: Tensor, k1: Tensor, k2: Tensor) -> Tensor:
        return self.contrastive(q1, k2) + self.contrastive(q2, k1)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
