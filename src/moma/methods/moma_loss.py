"""MOMA's distillation loss: projected student tokens vs normalised teacher tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOSSES = ("smooth_l1", "mse", "cosine")
TARGET_NORMS = ("layernorm", "l2", "none")


def normalize_target(target: Tensor, how: str, eps: float = 1e-6) -> Tensor:
    """Normalise teacher tokens per token (last dimension).

    Args:
        target: teacher tokens ``[..., D]``.
        how: ``"layernorm"`` (zero mean, unit variance per token, no affine), ``"l2"``
            (unit length per token) or ``"none"``.
        eps: LayerNorm epsilon (1e-6, as the ViTs use).
    """
    if how == "layernorm":
        return F.layer_norm(target, target.shape[-1:], eps=eps)
    if how == "l2":
        return F.normalize(target, dim=-1)
    if how == "none":
        return target
    raise ValueError(f"target_norm must be one of {TARGET_NORMS}, got {how!r}")


class MomaLoss(nn.Module):
    """Distance between the student's projected tokens and the teacher's normalised tokens.

    Only the target is normalised (``target_norm``); the prediction is what the student's
    projector outputs, as in the paper ("align the normalised representation of the teacher
    with the projected representation of the student").

    Inputs:
        pred: student tokens after the projector, ``[N, T, D]`` (any leading shape ``[..., D]``).
        target: raw teacher tokens of the same shape; they are detached, cast to float32 and
            normalised here.

    Returns:
        A scalar: the mean over all tokens of ``smooth_l1`` (elementwise, mean over ``D`` too),
        ``mse`` (likewise) or ``cosine`` (``2 - 2 cos(pred, target)`` per token).
    """

    def __init__(
        self, loss: str = "smooth_l1", target_norm: str = "layernorm", beta: float = 1.0
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if target_norm not in TARGET_NORMS:
            raise ValueError(f"target_norm must be one of {TARGET_NORMS}, got {target_norm!r}")
        self.loss = loss
        self.target_norm = target_norm
        self.beta = float(beta)

    def extra_repr(self) -> str:
        return f"loss={self.loss}, target_norm={self.target_norm}, beta={self.beta}"

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        pred = pred.float()  # [N, T, D]
        with torch.no_grad():
            target = normalize_target(target.detach().float(), self.target_norm)  # [N, T, D]
        if self.loss == "smooth_l1":
            return F.smooth_l1_loss(pred, target, beta=self.beta)
        if self.loss == "mse":
            return F.mse_loss(pred, target)
        cos = F.cosine_similarity(pred, target, dim=-1, eps=1e-6)  # [N, T]
        return (2.0 - 2.0 * cos).mean()
