"""Pooling of a set of token features into one vector."""
from __future__ import annotations

from torch import Tensor


def gem_pool(x: Tensor, p: float = 3.0, dim: int = 1, eps: float = 1e-6) -> Tensor:
    """Generalised-mean (GeM) pooling over ``dim``: ``(mean of x^p)^(1/p)`` on values
    clamped to at least ``eps`` (positive, so fractional powers are defined). p = 1 is the
    average, p -> inf the maximum; p = 3 is the copy-detection descriptor of thesis 5.5.1.
    E.g. a ViT's patch tokens (B, N, D) -> (B, D) with the default ``dim=1``."""
    return x.clamp_min(eps).pow(p).mean(dim).pow(1.0 / p)
