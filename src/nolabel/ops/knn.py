"""Weighted k-NN classification of frozen features (thesis 5.3.2; Wu et al., 2018).

Every test feature finds its ``k`` most cosine-similar training features; each
neighbour ``j`` votes for its label with weight ``exp(sim_j / T)``, and the class
with the largest summed vote wins. DINO uses ``k = 20`` ("20 NN is consistently
working the best", thesis 5.3.2) and ``T = 0.07``.

faiss is only the search engine (exact ``IndexFlatIP`` on l2-normalised float32
rows); votes are summed in float64 with torch, so ``exp(1 / T)`` cannot overflow
for any ``T >= 0.0015``.

Pure functions on feature tensors, at the bottom of the layers so that both
``nolabel eval`` (:mod:`nolabel.evaluate`) and the k-NN curves logged during
training (:mod:`nolabel.knn_monitor`) use this one classifier.
"""
from __future__ import annotations

from collections.abc import Iterator

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# (k, T): thesis 5.3.2 (k=20, T=0.07) and lightly's benchmarks (k=200, T=0.1).
KNN_PROTOCOLS = {"thesis": (20, 0.07), "lightly": (200, 0.1)}


def _as_cpu_f32(x: Tensor, name: str) -> Tensor:
    x = torch.as_tensor(x).detach()
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, dim), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: k-NN needs at least one sample")
    x = x.to("cpu", torch.float32)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def _as_labels(y: Tensor, n: int, name: str) -> Tensor:
    y = torch.as_tensor(y).detach().to("cpu")
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class indices, got {y.dtype}")
    y = y.long()
    if bool((y < 0).any()):
        raise ValueError(
            f"{name} contains negative labels (-1 = unlabelled): k-NN needs a label for every sample"
        )
    return y


def _check_args(k: int, temperature: float, chunk_size: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")


def _num_classes(num_classes: int | None, *labels: Tensor) -> int:
    top = max(int(y.max()) for y in labels) + 1
    if num_classes is None:
        return top
    if top > num_classes:
        raise ValueError(f"labels go up to {top - 1} but num_classes={num_classes}")
    return int(num_classes)


def _chunk_scores(
    train: Tensor, labels: Tensor, test: Tensor, k: int, temperature: float, num_classes: int, chunk_size: int
) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(start, scores)`` with float64 scores (m, C) for test rows ``start:start+m``.

    train (N,D), test (M,D): CPU float32, not yet normalised; labels (N,) int64.
    """
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"feature dims differ: train {train.shape[1]} vs test {test.shape[1]}")
    train = F.normalize(train, dim=1)
    index = faiss.IndexFlatIP(train.shape[1])
    index.add(np.ascontiguousarray(train.numpy(), dtype=np.float32))
    k = min(k, train.shape[0])
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(max(1, torch.get_num_threads()))  # follow torch's thread budget
    try:
        for start in range(0, test.shape[0], chunk_size):
            q = F.normalize(test[start : start + chunk_size], dim=1)
            sims, idx = index.search(np.ascontiguousarray(q.numpy(), dtype=np.float32), k)
            weights = torch.from_numpy(sims).double().div_(temperature).exp_()  # (m, k)
            votes = labels[torch.from_numpy(idx)]  # (m, k)
            scores = torch.zeros(q.shape[0], num_classes, dtype=torch.float64)
            yield start, scores.scatter_add_(1, votes, weights)
    finally:
        faiss.omp_set_num_threads(threads)


def knn_scores(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 4096,
) -> Tensor:
    """Weighted k-NN class scores.

    Args:
        train_feats: (N, D) features, any float dtype and device; l2-normalised here.
        train_labels: (N,) int64 class indices in ``[0, C)`` (no -1 / unlabelled).
        test_feats: (M, D) features.
        k: neighbours per test sample (thesis 5.3.2: 20); clamped to N.
        temperature: ``T`` in the vote weight ``exp(cos_sim / T)`` (0.07 as in DINO).
        num_classes: C; default ``max(train_labels) + 1``.
        chunk_size: test rows searched at once.

    Returns:
        (M, C) float64 CPU tensor; ``scores[i, c] = sum over the k nearest train samples
        j of sample i with label c of exp(cos(test_i, train_j) / T)``. Which neighbours
        are kept when several tie at the k-th similarity is faiss's choice.
    """
    _check_args(k, temperature, chunk_size)
    train = _as_cpu_f32(train_feats, "train_feats")
    test = _as_cpu_f32(test_feats, "test_feats")
    labels = _as_labels(train_labels, train.shape[0], "train_labels")
    c = _num_classes(num_classes, labels)
    parts = [s for _, s in _chunk_scores(train, labels, test, k, temperature, c, chunk_size)]
    return torch.cat(parts)


def knn_classify(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 4096,
) -> dict:
    """Top-1 / top-5 accuracy (percent, 0-100) of the weighted k-NN classifier.

    Arguments as :func:`knn_scores`, plus ``test_labels`` (M,) int64; C defaults to one
    more than the largest train or test label. Classes are ranked by score, ties going
    to the lower class index (so top-1 is ``argmax``); a test sample counts for top-5
    when its class ranks among the first ``min(5, C)``. Scores are never held for all
    test samples at once.

    Returns:
        ``{"top1", "top5", "k", "temperature", "n_train", "n_test"}`` where ``k`` is the
        number of neighbours actually used (``min(k, N)``).
    """
    _check_args(k, temperature, chunk_size)
    train = _as_cpu_f32(train_feats, "train_feats")
    test = _as_cpu_f32(test_feats, "test_feats")
    labels = _as_labels(train_labels, train.shape[0], "train_labels")
    targets = _as_labels(test_labels, test.shape[0], "test_labels")
    c = _num_classes(num_classes, labels, targets)
    top5 = min(5, c)
    hits1 = hits5 = 0
    classes = torch.arange(c)
    for start, scores in _chunk_scores(train, labels, test, k, temperature, c, chunk_size):
        t = targets[start : start + scores.shape[0]]
        s_t = scores.gather(1, t.view(-1, 1))
        rank = (scores > s_t).sum(1) + ((scores == s_t) & (classes.view(1, -1) < t.view(-1, 1))).sum(1)
        hits1 += int((rank == 0).sum())
        hits5 += int((rank < top5).sum())
    n = test.shape[0]
    return {
        "top1": 100.0 * hits1 / n,
        "top5": 100.0 * hits5 / n,
        "k": min(k, train.shape[0]),
        "temperature": float(temperature),
        "n_train": train.shape[0],
        "n_test": n,
    }
