"""MLP heads: MoCo v3 projector/predictor (BatchNorm) and MOMA's per-token projector."""

from __future__ import annotations

from torch import nn


def build_mlp(
    num_layers: int,
    in_dim: int,
    hidden_dim: int,
    out_dim: int,
    norm: str = "bn",
    last_norm: bool = True,
) -> nn.Sequential:
    """An MLP of ``num_layers`` Linear layers, as MoCo v3's ``_build_mlp``.

    Args:
        norm: ``"bn"`` (BatchNorm1d, for ``[N, D]`` inputs, MoCo v3) or ``"ln"`` (LayerNorm,
            works per token on ``[N, T, D]``) or ``"none"``.
        last_norm: add a final norm *without affine* after the last Linear (MoCo v3's
            projector has it, its predictor does not).

    ``num_layers=1`` is a single Linear (no norm, no activation unless ``last_norm``).
    """
    if num_layers < 1:
        raise ValueError("an MLP needs num_layers >= 1")

    def make_norm(dim: int, affine: bool) -> nn.Module:
        if norm == "bn":
            return nn.BatchNorm1d(dim, affine=affine)
        if norm == "ln":
            return nn.LayerNorm(dim, elementwise_affine=affine)
        return nn.Identity()

    layers: list[nn.Module] = []
    for i in range(num_layers):
        d_in = in_dim if i == 0 else hidden_dim
        last = i == num_layers - 1
        d_out = out_dim if last else hidden_dim
        # A Linear followed by a norm needs no bias (MoCo v3).
        layers.append(nn.Linear(d_in, d_out, bias=(last and not last_norm) or norm == "none"))
        if not last:
            layers += [make_norm(d_out, True), nn.GELU() if norm == "ln" else nn.ReLU(inplace=True)]
        elif last_norm:
            layers.append(make_norm(d_out, False))
    return nn.Sequential(*layers)
