"""Regression losses without negatives: a prediction matched to a stop-gradient target.

- :func:`negative_cosine` is SimSiam's criterion D (Chen & He, "Exploring Simple
  Siamese Representation Learning", CVPR 2021, Eqs. 1-4).
- :func:`normalized_mse` is BYOL's criterion (Grill et al., "Bootstrap Your Own
  Latent", NeurIPS 2020, Eq. 2).

Both equal each other up to an affine map (``normalized_mse = 2 + 2 * negative_cosine``),
so they give the same gradient directions; the scale differs by 2. Both detach the
target ``z`` (the stop-gradient is part of the loss) and are computed in float32
(float16/bfloat16 are upcast; float64 stays float64).
Each function is one direction; the methods symmetrise (see each docstring).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nolabel.ops.precision import float32_region


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """float16 / bfloat16 -> float32; float32 and float64 unchanged (float64 keeps gradcheck exact)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _cosine(name: str, p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Cosine similarity per row of (N, D) ``p`` and detached ``z``; returns (N,)."""
    if p.dim() != 2 or p.shape != z.shape:
        raise ValueError(f"{name} expects two (N, D) tensors of the same shape, "
                         f"got {tuple(p.shape)} and {tuple(z.shape)}")
    if p.shape[0] == 0 or p.shape[1] == 0:
        raise ValueError(f"{name} needs N >= 1 and D >= 1, got {tuple(p.shape)}")
    p_unit = F.normalize(_upcast(p), dim=1)                              # (N, D)
    z_unit = F.normalize(z.detach().to(p_unit.dtype), dim=1)             # (N, D), stop-gradient
    return (p_unit * z_unit).sum(dim=1)                                  # (N,)


@float32_region
def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam's ``D(p, stopgrad(z)) = -mean_i  p_i . z_i / (||p_i|| ||z_i||)`` (Eqs. 1, 3).

    p: (N, D) predictor outputs; z: (N, D) projections of the other view (detached
    here). Returns a scalar float32 in [-1, 1]; -1 when every pair is aligned. SimSiam's
    loss is ``0.5 * negative_cosine(p1, z2) + 0.5 * negative_cosine(p2, z1)`` (Eq. 4).
    A zero vector has cosine 0 with everything (normalisation uses eps 1e-12).
    """
    return -_cosine("negative_cosine", p, z).mean()


@float32_region
def normalized_mse(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's ``mean_i || p_i/||p_i|| - z_i/||z_i|| ||^2 = mean_i (2 - 2 cos(p_i, z_i))`` (Eq. 2).

    p: (N, D) online predictions q_theta(z_theta); z: (N, D) target projections
    z'_xi (detached here). Returns a scalar float32 in [0, 4]; 0 when every pair is
    aligned. BYOL's loss is the sum of both directions,
    ``normalized_mse(p1, z2') + normalized_mse(p2, z1')`` (Section 3.1, L + L~).
    """
    return (2.0 - 2.0 * _cosine("normalized_mse", p, z)).mean()
