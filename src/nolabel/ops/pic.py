"""Power Iteration Clustering, the variant of thesis section 3.2.2 (after Douze et al., 2017).

1. Graph G (n x n, sparse): every point links to its ``n_neighbors`` (5) nearest
   neighbours in Euclidean distance (exact faiss search, itself excluded), with weight
   ``w_ij = exp(-||x_i - x_j||^2 / sigma^2)`` (sigma 0.2, suited to l2-normalised
   features whose distances lie in [0, 2]); the diagonal is 0.
2. Power iteration from ``v = [1/n, ..., 1/n]``:
   ``v <- N_1(alpha (G + G^T) v + (1 - alpha) v)`` with alpha = 1e-3 and ``N_1`` the
   l1 normalisation. The thesis gives no iteration count; 200 by default. (The released
   DeepCluster code replaces ``(1 - alpha) v`` by a restart term ``(1 - alpha) / n``;
   this module follows the thesis formula.)
3. Every point i keeps one edge, to the neighbour j maximising ``w_ij (v_j - v_i)`` when
   that value is positive; a point with no such neighbour is a local maximum of v and
   keeps none. Neighbours and weights are those of the symmetric graph ``G + G^T`` the
   iteration runs on (a pair linked both ways has weight ``w_ij + w_ji``). Each kept
   edge climbs in v, so the kept edges form a forest: its trees (the connected
   components) are the clusters, one local maximum each.
"""
from __future__ import annotations

from typing import NamedTuple

import faiss
import numpy as np
import torch

__all__ = ["PICResult", "knn_graph", "pic_weights", "power_iteration", "symmetric_edges",
           "argmax_edge_clusters", "pic"]


class PICResult(NamedTuple):
    """assignments: (N,) int64 cluster of each point, 0..n_clusters-1, numbered by the
    smallest point index they contain; n_clusters: C; v: (N,) float64 final power vector."""

    assignments: torch.Tensor
    n_clusters: int
    v: torch.Tensor


def knn_graph(x: np.ndarray, n_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
    """Directed kNN graph of x (N, D) float32: (neighbors (N, K) int64, squared distances
    (N, K) float32), nearest first, each point's own row removed even among duplicates."""
    n = len(x)
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    sq_dists, found = index.search(x, n_neighbors + 1)                      # (N, K + 1)
    is_self = found == np.arange(n)[:, None]
    is_self[~is_self.any(1), -1] = True                                    # self not found: drop the farthest
    keep = ~is_self
    neighbors = found[keep].reshape(n, n_neighbors).astype(np.int64)
    return neighbors, np.maximum(sq_dists[keep].reshape(n, n_neighbors), 0.0)


def pic_weights(sq_dists: np.ndarray, sigma: float) -> np.ndarray:
    """Edge weights ``exp(-d^2 / sigma^2)`` from squared distances (any shape), float64."""
    return np.exp(-sq_dists.astype(np.float64) / sigma**2)


def symmetric_edges(neighbors: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges of ``G + G^T`` from the kNN lists: (src (E,), dst (E,), weight (E,)), one entry
    per ordered pair, sorted by (src, dst); a pair linked both ways sums its two weights."""
    n, k = neighbors.shape
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    src = np.concatenate([rows, neighbors.ravel()])
    dst = np.concatenate([neighbors.ravel(), rows])
    keys, inverse = np.unique(src * n + dst, return_inverse=True)
    weight = np.bincount(inverse, weights=np.tile(weights.ravel(), 2), minlength=len(keys))
    return keys // n, keys % n, weight


def power_iteration(src: np.ndarray, dst: np.ndarray, weight: np.ndarray, n: int,
                    alpha: float, n_iters: int) -> np.ndarray:
    """``v <- N_1(alpha A v + (1 - alpha) v)`` from ``v = 1/n``, with A the sparse
    symmetric matrix of the edges (``A[src, dst] = weight``). Returns v (n,) float64."""
    v = np.full(n, 1.0 / n)
    for _ in range(n_iters):
        av = np.bincount(src, weights=weight * v[dst], minlength=n)        # (A v)_i
        v = alpha * av + (1.0 - alpha) * v
        v /= np.abs(v).sum()
    return v


def argmax_edge_clusters(src: np.ndarray, dst: np.ndarray, weight: np.ndarray,
                         v: np.ndarray) -> tuple[np.ndarray, int]:
    """Step 3: keep ``i -> argmax_j w_ij (v_j - v_i)`` when positive; return the connected
    components of the kept edges as (assignments (n,) int64, number of clusters)."""
    n = len(v)
    gain = weight * (v[dst] - v[src])                                      # (E,)
    order = np.lexsort((-gain, src))                                       # best edge first per src
    first = order[np.r_[True, src[order][1:] != src[order][:-1]]]
    parent = np.arange(n)
    best = first[gain[first] > 0]
    parent[src[best]] = dst[best]
    while True:                                                            # pointer jumping to the roots
        grand = parent[parent]
        if np.array_equal(grand, parent):
            break
        parent = grand
    roots, smallest, assignments = np.unique(parent, return_index=True, return_inverse=True)
    rank = np.empty(len(roots), dtype=np.int64)                            # number by smallest member
    rank[np.argsort(smallest)] = np.arange(len(roots))
    return rank[assignments.ravel()], len(roots)


@torch.no_grad()
def pic(x, n_neighbors: int = 5, sigma: float = 0.2, alpha: float = 1e-3, n_iters: int = 200) -> PICResult:
    """Cluster x (N, D) (tensor or array; float32 on the CPU) with PIC (thesis 3.2.2).

    Uses ``min(n_neighbors, N - 1)`` neighbours; a single point is one cluster. The
    number of clusters is found by the method, not chosen. Returns a :class:`PICResult`.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().float().numpy()
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"pic expects a non-empty (N, D) matrix, got shape {x.shape}")
    if n_neighbors < 1 or sigma <= 0 or not 0 < alpha <= 1 or n_iters < 0:
        raise ValueError(f"pic needs n_neighbors >= 1, sigma > 0, 0 < alpha <= 1, n_iters >= 0; "
                         f"got {n_neighbors}, {sigma}, {alpha}, {n_iters}")
    if not np.isfinite(x).all():
        raise ValueError("pic: x contains NaN or infinite values")
    n = len(x)
    if n == 1:
        return PICResult(torch.zeros(1, dtype=torch.int64), 1, torch.ones(1, dtype=torch.float64))
    neighbors, sq_dists = knn_graph(x, min(n_neighbors, n - 1))
    src, dst, weight = symmetric_edges(neighbors, pic_weights(sq_dists, sigma))
    v = power_iteration(src, dst, weight, n, alpha, n_iters)
    assignments, n_clusters = argmax_edge_clusters(src, dst, weight, v)
    return PICResult(torch.from_numpy(assignments), n_clusters, torch.from_numpy(v))
