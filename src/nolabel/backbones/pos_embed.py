"""Resizing learned ViT position embeddings to another patch grid.

A ViT learns one position embedding per patch of the grid it was built for (plus one for the
CLS token). To run it on another input size (multi-crop's small local crops, or evaluation at
a larger resolution), the patch embeddings are viewed as a (D, h0, w0) image and resized
bicubically to the new grid (Dosovitskiy et al. 2020, sec. 3.2; DINO, thesis sec. 5.4);
the CLS embedding has no position and is kept as is.

The thesis does not say how the bicubic resize is parameterised; two rules give different
values (``POS_INTERP_MODES``):

- ``"reference"`` (default), DINO's reference code: ``F.interpolate(scale_factor=((h + 0.1) /
  h0, (w + 0.1) / w0))``, the output size then checked to be (h, w). The 0.1 only guards
  ``floor(h0 * scale)`` against rounding down; but with a scale factor given (and
  ``recompute_scale_factor`` unset) interpolate maps output pixel i to input coordinate
  ``(i + 0.5) * h0 / (h + 0.1) - 0.5``, not ``(i + 0.5) * h0 / h - 0.5``, so the samples sit
  slightly off the exact resize.
- ``"size"``: ``F.interpolate(size=(h, w))``, the exact resize.

(The reference names the grid sizes w0, h0 but takes them from dims 2 and 3 of the image,
i.e. rows then columns: the first scale factor is the rows', as here.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

POS_INTERP_MODES = ("reference", "size")
REFERENCE_OFFSET = 0.1   # DINO's "+ 0.1 to avoid floating point error in the interpolation"


def interpolate_pos_embed(
    pos_embed: Tensor,
    src_grid: tuple[int, int],
    dst_grid: tuple[int, int],
    num_prefix_tokens: int = 1,
    mode: str = "reference",
) -> Tensor:
    """Bicubically resize the patch part of ``pos_embed`` from ``src_grid`` to ``dst_grid``.

    Args:
        pos_embed: (1, P + h0 * w0, D), the first ``P = num_prefix_tokens`` rows (CLS) first,
            then the patch rows in row-major (h0, w0) order.
        src_grid: (h0, w0), the grid ``pos_embed`` was made for.
        dst_grid: (h, w), the wanted grid.
        num_prefix_tokens: P, rows left untouched.
        mode: ``"reference"`` (DINO's scale-factor rule) or ``"size"``; see the module docstring.

    Returns:
        (1, P + h * w, D), same dtype as ``pos_embed`` (computed in float32), differentiable.
        ``pos_embed`` itself when ``dst_grid == src_grid`` (as the reference code; its
        scale-factor resize would not be the identity there).
    """
    if mode not in POS_INTERP_MODES:
        raise ValueError(f"unknown position-embedding interpolation {mode!r}; "
                         f"choose from {', '.join(POS_INTERP_MODES)}")
    h0, w0 = src_grid
    h, w = dst_grid
    prefix, patch = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]  # (1, P, D), (1, h0*w0, D)
    dim = pos_embed.shape[-1]
    if patch.shape[1] != h0 * w0:
        raise ValueError(f"pos_embed has {patch.shape[1]} patch rows, expected {h0}x{w0}={h0 * w0}")
    if h < 1 or w < 1:
        raise ValueError(f"target grid must be at least 1x1, got {h}x{w}")
    if (h, w) == (h0, w0):
        return pos_embed
    grid = patch.reshape(1, h0, w0, dim).permute(0, 3, 1, 2).float()  # (1, D, h0, w0)
    if mode == "size":
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)  # (1, D, h, w)
    else:
        scale = ((h + REFERENCE_OFFSET) / h0, (w + REFERENCE_OFFSET) / w0)
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", align_corners=False)  # (1, D, h, w)
        if grid.shape[-2:] != (h, w):
            raise RuntimeError(f"position-embedding resize gave a {tuple(grid.shape[-2:])} grid, expected {(h, w)}")
    patch = grid.permute(0, 2, 3, 1).reshape(1, h * w, dim).to(pos_embed.dtype)  # (1, h*w, D)
    return torch.cat([prefix, patch], dim=1)  # (1, P + h*w, D)


def sincos_2d(grid: tuple[int, int], dim: int, base: float = 10000.0) -> Tensor:
    """Fixed 2-D sine-cosine position embeddings: (h * w, dim), rows in row-major (h, w) order.

    The 1-D embedding of Vaswani et al. 2017 (sec. 3.5) for each axis, on half the
    channels each: the first ``dim / 2`` encode the row ``r``, the last ``dim / 2`` the column
    ``c``; within a half, ``sin(t * f_k)`` for k < dim/4 then ``cos(t * f_k)``, with frequencies
    ``f_k = base^(-k / (dim / 4))``. MAE uses this version in its encoder and decoder
    (He et al. 2022, A.1). ``dim`` must be a multiple of 4. float32.
    """
    h, w = grid
    if dim % 4 != 0 or dim < 4:
        raise ValueError(f"2-D sin-cos position embeddings need a dimension divisible by 4, got {dim}")
    quarter = dim // 4
    freqs = base ** (-torch.arange(quarter, dtype=torch.float64) / quarter)      # (dim/4,)
    rows = torch.arange(h, dtype=torch.float64).repeat_interleave(w)            # (h*w,) r of each patch
    cols = torch.arange(w, dtype=torch.float64).repeat(h)                       # (h*w,) c of each patch
    parts = []
    for t in (rows, cols):
        angle = t[:, None] * freqs[None, :]                                      # (h*w, dim/4)
        parts += [torch.sin(angle), torch.cos(angle)]
    return torch.cat(parts, dim=1).float()                                       # (h*w, dim)
