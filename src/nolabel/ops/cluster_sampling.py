"""Balancing pseudo-labels: uniform sampling over clusters or inverse-size weights
(thesis section 3.2.1, "Avoiding trivial solutions").

Training on unbalanced pseudo-labels lets a few large clusters dominate; the thesis
samples "images based on a uniform distribution over the classes, or pseudo-labels",
which "is equivalent to weight the contribution of an input to the loss function in
Eq. (3.1) by the inverse of the size of its assigned cluster". Both are here.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["uniform_cluster_sampler", "inverse_size_weights"]


def _labels(assignments) -> np.ndarray:
    labels = assignments.detach().cpu().numpy() if isinstance(assignments, torch.Tensor) else np.asarray(assignments)
    if labels.ndim != 1:
        raise ValueError(f"assignments must be a (N,) vector, got shape {labels.shape}")
    if labels.size and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0):
        raise ValueError("assignments must be non-negative integer cluster ids")
    return labels.astype(np.int64)


def uniform_cluster_sampler(assignments, n_samples: int, seed: int = 0) -> torch.Tensor:
    """Draw ``n_samples`` image indices, each independently: a cluster uniformly among the
    non-empty ones, then an image uniformly within it. Empty clusters are never drawn.

    assignments: (N,) int cluster id of every image (tensor or array). Returns (n_samples,)
    int64 indices into 0..N-1 (with replacement), a function of ``seed`` only.
    """
    labels = _labels(assignments)
    if n_samples < 0:
        raise ValueError(f"n_samples must be >= 0, got {n_samples}")
    if labels.size == 0:
        raise ValueError("cannot sample from an empty set of assignments")
    order = np.argsort(labels, kind="stable")                             # images grouped by cluster
    clusters, starts, sizes = np.unique(labels[order], return_index=True, return_counts=True)
    rng = np.random.default_rng(seed)
    picked = rng.integers(len(clusters), size=n_samples)                  # (n_samples,) non-empty cluster
    within = np.floor(rng.random(n_samples) * sizes[picked]).astype(np.int64)
    return torch.from_numpy(order[starts[picked] + within])


def inverse_size_weights(assignments, k: int) -> torch.Tensor:
    """Per-cluster loss weights (k,) float32: ``N / (C * size_c)`` for each of the C
    non-empty clusters, 0 for empty ones, so every non-empty cluster carries the same
    total weight N / C and the weights of the N images average to 1.

    A sample's weight is ``weights[assignments[n]]``: use ``(w[y] * ce).mean()`` for an
    unbiased loss, or ``F.cross_entropy(logits, y, weight=w)``, which divides by the
    batch's summed weights instead. assignments: (N,) int in 0..k-1.
    """
    labels = _labels(assignments)
    if labels.size == 0:
        raise ValueError("cannot weight an empty set of assignments")
    if labels.max() >= k:
        raise ValueError(f"assignments contain cluster {labels.max()} but k={k}")
    sizes = np.bincount(labels, minlength=k).astype(np.float64)          # (k,)
    filled = sizes > 0
    weights = np.zeros(k, dtype=np.float64)
    weights[filled] = labels.size / (filled.sum() * sizes[filled])
    return torch.from_numpy(weights).float()
