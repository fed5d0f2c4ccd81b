"""Resizing learned ViT position embeddings to another patch grid.

A ViT learns one position embedding per patch of the grid it was built for (plus one for the
CLS token). To run it on another input size (multi-crop's small local crops, or evaluation at
a larger resolution), the patch embeddings are viewed as a (D, h0, w0) image and resized
bicubically to the new grid (Dosovitskiy et al. 2020, sec. 3.2; DINO, thesis sec. 5.4);
the CLS embedding has no position and is kept as is.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def interpolate_pos_embed(
    pos_embed: Tensor,
    src_grid: tuple[int, int],
    dst_grid: tuple[int, int],
    num_prefix_tokens: int = 1,
) -> Tensor:
    """Bicubically resize the patch part of ``pos_embed`` from ``src_grid`` to ``dst_grid``.

    Args:
        pos_embed: (1, P + h0 * w0, D), the first ``P = num_prefix_tokens`` rows (CLS) first,
            then the patch rows in row-major (h0, w0) order.
        src_grid: (h0, w0), the grid ``pos_embed`` was made for.
        dst_grid: (h, w), the wanted grid.
        num_prefix_tokens: P, rows left untouched.

    Returns:
        (1, P + h * w, D), same dtype as ``pos_embed`` (computed in float32), differentiable.
        Always interpolates, even when ``dst_grid == src_grid`` (then it is the identity up
        to rounding); callers skip the call in that case.
    """
    h0, w0 = src_grid
    h, w = dst_grid
    prefix, patch = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]  # (1, P, D), (1, h0*w0, D)
    dim = pos_embed.shape[-1]
    if patch.shape[1] != h0 * w0:
        raise ValueError(f"pos_embed has {patch.shape[1]} patch rows, expected {h0}x{w0}={h0 * w0}")
    if h < 1 or w < 1:
        raise ValueError(f"target grid must be at least 1x1, got {h}x{w}")
    grid = patch.reshape(1, h0, w0, dim).permute(0, 3, 1, 2).float()  # (1, D, h0, w0)
    grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)  # (1, D, h, w)
    patch = grid.permute(0, 2, 3, 1).reshape(1, h * w, dim).to(pos_embed.dtype)  # (1, h*w, D)
    return torch.cat([prefix, patch], dim=1)  # (1, P + h*w, D)
