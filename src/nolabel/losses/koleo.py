"""KoLeo regulariser (Sablayrolles et al. 2019, "Spreading vectors for similarity search";
used by DINOv2, Oquab et al. 2024, sec. 4): the Kozachenko-Leonenko estimator of the
differential entropy of the features, up to constants, which spreads a batch uniformly on
the sphere.

Pure function of a tensor. Computed per process on its own batch (as DINOv2): no gathering.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from nolabel.ops.precision import float32_region

KOLEO_EPS = 1e-8   # added to the nearest-neighbour distance inside the log (duplicates give 0)


@float32_region
def koleo_loss(features: Tensor, eps: float = KOLEO_EPS) -> Tensor:
    """``-1/n sum_i log(min_{j != i} ||x_i - x_j|| + eps)`` with ``x = features / ||features||``.

    features: (n, D), or (V, n, D) for V views each regularised on its own (the mean over
    views is returned). Returns a scalar. A batch of one sample has no neighbour: 0 (kept in
    the graph).
    """
    x = features if features.dim() == 3 else features.unsqueeze(0)     # (V, n, D)
    if x.dim() != 3:
        raise ValueError(f"koleo_loss expects (n, D) or (V, n, D) features, got {tuple(features.shape)}")
    n = x.shape[1]
    if n < 2:
        return x.sum() * 0.0
    x = F.normalize(x, dim=-1)
    # nearest neighbour by the largest dot product (same order as the distance, on the sphere),
    # then its distance computed directly: a difference of unit vectors, no 2 - 2 cos cancellation
    with torch.no_grad():
        sim = x @ x.transpose(1, 2)                                      # (V, n, n)
        sim.diagonal(dim1=1, dim2=2).fill_(-2.0)                         # never yourself
        nearest = sim.argmax(dim=2)                                      # (V, n)
    neighbour = x.gather(1, nearest.unsqueeze(-1).expand_as(x))          # (V, n, D)
    distance = torch.linalg.vector_norm(x - neighbour, dim=-1)           # (V, n)
    return -torch.log(distance + eps).mean()
