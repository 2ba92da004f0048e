"""Fixed 2-D sin-cos position tables, in the layouts of MAE and of MoCo v3.

Both methods train with a non-learned table. The two layouts hold the same numbers with the
row and column halves swapped (docs/DESIGN.md, section 2), so a table is only ever generated
for a freshly initialised model: a pre-trained ``pos_embed`` is always taken from its
checkpoint.

Per axis, a table of width ``D/2`` is ``[sin(pos * w), cos(pos * w)]`` with the frequencies
``w_i = 1 / temperature ** (i / (D/4))`` for ``i < D/4``.

- ``"mae"``: the first half encodes the column of a patch, the second half its row.
- ``"mocov3"``: the first half encodes the row, the second half the column.
"""

from __future__ import annotations

import torch
from torch import Tensor

LAYOUTS = ("mae", "mocov3")


def sincos_1d(dim: int, pos: Tensor, temperature: float = 10000.0) -> Tensor:
    """Sin-cos features of positions ``pos [M]`` -> ``[M, dim]`` (``dim`` even)."""
    if dim % 2:
        raise ValueError(f"a 1-D sin-cos table needs an even width, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / temperature**omega  # [dim/2]
    angles = pos.to(torch.float64).reshape(-1, 1) * omega.reshape(1, -1)  # [M, dim/2]
    return torch.cat([angles.sin(), angles.cos()], dim=1)  # [M, dim]


def sincos_2d(
    embed_dim: int,
    grid_size: tuple[int, int],
    num_prefix_tokens: int = 1,
    layout: str = "mae",
    temperature: float = 10000.0,
) -> Tensor:
    """The fixed position table of a ViT: ``[1, num_prefix_tokens + rows * cols, embed_dim]``.

    Patches are numbered row by row (as timm's patch embedding flattens them); prefix (CLS)
    rows are zeros.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"sin-cos layout must be one of {LAYOUTS}, got {layout!r}")
    if embed_dim % 4:
        raise ValueError(f"a 2-D sin-cos table needs a width divisible by 4, got {embed_dim}")
    rows, cols = grid_size
    row_idx, col_idx = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    emb_row = sincos_1d(embed_dim // 2, row_idx.flatten(), temperature)  # [L, D/2]
    emb_col = sincos_1d(embed_dim // 2, col_idx.flatten(), temperature)  # [L, D/2]
    halves = [emb_col, emb_row] if layout == "mae" else [emb_row, emb_col]
    table = torch.cat(halves, dim=1)  # [L, D]
    prefix = torch.zeros(num_prefix_tokens, embed_dim, dtype=table.dtype)
    return torch.cat([prefix, table], dim=0).unsqueeze(0).float()  # [1, P + L, D]


@torch.no_grad()
def init_vit_sincos_pos_embed(vit, layout: str = "mae", trainable: bool = False) -> None:
    """Fill a timm ViT's ``pos_embed`` with a 2-D sin-cos table and (by default) freeze it.

    Handles tables with or without rows for the prefix tokens (timm's ``no_embed_class``).
    Call only on a freshly built model: it overwrites whatever ``pos_embed`` holds.
    """
    if vit.pos_embed is None:
        return
    rows, cols = (int(g) for g in vit.patch_embed.grid_size)
    num_rows = vit.pos_embed.shape[1]
    prefix = num_rows - rows * cols
    if prefix < 0:
        raise ValueError(f"pos_embed has {num_rows} rows for a {rows}x{cols} patch grid")
    table = sincos_2d(vit.pos_embed.shape[-1], (rows, cols), prefix, layout)
    vit.pos_embed.copy_(table.to(vit.pos_embed.dtype))
    vit.pos_embed.requires_grad_(trainable)
