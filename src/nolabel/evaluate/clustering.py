"""Clustering quality of frozen features (thesis 3.2.2; Fig. 3.13).

k-means (faiss, :func:`nolabel.ops.kmeans.kmeans`, 20 Lloyd iterations, seeded) on
l2-normalised test features, with k = the number of classes and k = 10 x that
(capped at the number of images); each partition is compared with the labels by NMI
(thesis 3.2.2), AMI, ARI and purity. A PNG shows random images of the largest
clusters of the k = classes partition, one row per cluster titled with its id, size and
majority class (:func:`nolabel.evaluate.grid.cluster_grid`, as ``nolabel cluster``'s).
"""
from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from nolabel.evaluate.context import EvalContext, EvalError
from nolabel.evaluate.grid import cluster_grid, cluster_titles
from nolabel.metrics import ami, ari, nmi, purity
from nolabel.ops.kmeans import kmeans

MULTIPLES = (1, 10)
GRID_ROWS, GRID_COLS = 16, 8


def cluster_quality(feats: torch.Tensor, labels: torch.Tensor, k: int, seed: int = 0, n_iters: int = 20) -> dict:
    """k-means on l2-normalised feats (N, D) -> ``{"k", "nmi", "ami", "ari", "purity", "assignments"}``."""
    x = F.normalize(torch.as_tensor(feats).float(), dim=1)
    result = kmeans(x, k, n_iters=n_iters, seed=seed)
    a, y = result.assignments, torch.as_tensor(labels)
    return {"k": k, "nmi": nmi(a, y), "ami": ami(a, y), "ari": ari(a, y), "purity": purity(a, y),
            "n_iters": result.n_iters, "assignments": a}


def clustering_protocol(ctx: EvalContext, multiples: Sequence[int] = MULTIPLES, role: str = "test", seed: int = 0,
                        grid: bool = True) -> dict:
    """``{"k=C": {...}, "k=10C": {...}, "grid": path, "n": N}`` (assignments left out)."""
    ctx.require_labels("clustering", role)
    if not multiples or min(multiples) < 1:
        raise EvalError(f"--multiples {list(multiples)}: give positive integers, e.g. 1 10")
    t0 = time.time()
    feats = ctx.features(role, "clustering")
    n_classes = ctx.num_classes(role)
    result: dict = {"n": int(feats.y.numel()), "classes": n_classes, "split": role}
    first = None
    for m in multiples:
        k = min(m * n_classes, int(feats.y.numel()))
        r = cluster_quality(feats.x, feats.y, k, seed)
        first = first or r
        result[f"k={m}x"] = {key: v for key, v in r.items() if key != "assignments"}
    if grid and first is not None:
        result["grid"] = str(save_cluster_grid(ctx, role, first["assignments"], feats.y, feats.classes, seed))
    result["seconds"] = round(time.time() - t0, 2)
    return result


def save_cluster_grid(ctx: EvalContext, role: str, assignments: torch.Tensor, labels: torch.Tensor,
                      classes: list[str] | None, seed: int = 0, rows: int = GRID_ROWS, cols: int = GRID_COLS):
    """PNG of ``cols`` random images from each of the ``rows`` largest clusters."""
    rng = np.random.default_rng(seed)
    a, y = assignments.numpy(), labels.numpy()
    sizes = np.bincount(a)
    order = np.argsort(-sizes, kind="stable")[:rows]
    picks = [rng.choice(np.flatnonzero(a == c), size=min(cols, int(sizes[c])), replace=False) for c in order]
    images, _ = ctx.gather(role, np.concatenate(picks).tolist(), "clustering")
    titles = cluster_titles(order.tolist(), a, y, classes)
    path = ctx.path("clustering_grid.png")
    cluster_grid(images, picks, titles).save(path)
    return path
