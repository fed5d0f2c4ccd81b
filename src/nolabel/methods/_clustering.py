"""The offline half shared by the deep-clustering methods (thesis chapter 3, 4.4):
a whole-dataset pass -> optional PCA-whitening + l2 -> k-means (or PIC) -> pseudo-labels
kept in buffers, plus the statistics they log. Not a method (leading underscore).

Pseudo-labels live in ``int32`` buffers of the method (one entry per dataset image, -1
when unlabelled) so a checkpoint carries them and exact resume holds (see sela.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nolabel.metrics import nmi
from nolabel.ops import dist
from nolabel.ops.kmeans import kmeans
from nolabel.ops.pca import fit_pca_whitening
from nolabel.ops.pic import pic

# Logged cluster statistics, in the order of the ``cluster_stats`` buffer.
STAT_NAMES = ("clusters_used", "largest_cluster", "smallest_cluster", "nmi_previous", "n_empty_fixed", "nmi_labels")


def true_labels(data_pass, index: torch.Tensor) -> torch.Tensor | None:
    """The class labels of the rows ``index`` of a whole-dataset pass, or None when the
    training data has none (``data_pass.labels``, see ``Method.on_epoch_start``). Only
    logged (NMI with the labels, thesis Fig. 3.3a): never used for training."""
    labels = getattr(data_pass, "labels", None)
    if labels is None:
        return None
    return labels[index.cpu()]


def label_nmi(truth: torch.Tensor | None, assignments: torch.Tensor) -> float:
    """NMI of ``assignments`` with the class labels ``truth`` (Fig. 3.3a); -1 when there
    are no labels or some are unknown."""
    if truth is None or not bool((truth >= 0).all()):
        return -1.0
    return nmi(np.asarray(truth.cpu()), np.asarray(assignments.cpu()))


def check_labelling(cfg, method: str) -> None:
    """The ``check_config`` of the methods that relabel the dataset with several clusterings
    (SeLa-v2, DeepCluster-v2, 4.4): a ValueError naming ``method`` unless ``n_heads`` and
    ``label_every_epochs`` are at least 1."""
    if cfg.n_heads < 1 or cfg.label_every_epochs < 1:
        raise ValueError(f"{method} needs n_heads >= 1 and label_every_epochs >= 1, got {cfg.n_heads} "
                         f"and {cfg.label_every_epochs}")


def default_k(n_images: int, thesis_k: int) -> int:
    """``min(thesis_k, n_images // 10)``, at least 2: the thesis value (10000 for ImageNet's
    1.3M images, 3.2.1) unless the data is small, where clusters should still hold ~10
    images on average. The one cluster-count rule of the clustering methods (DeepCluster,
    DeeperCluster, SeLa-v2, DeepCluster-v2)."""
    return max(2, min(thesis_k, n_images // 10))


def whiten(x: torch.Tensor, dim: int = 256) -> torch.Tensor:
    """PCA to ``dim`` (fewer when the data has fewer directions), whitening and l2
    normalisation (3.2.1): (N, D) -> (N, min(dim, D, N-1)) float32 CPU."""
    return fit_pca_whitening(x.float().cpu(), dim=dim).apply(x.float().cpu())


@dataclass
class Clustering:
    """assignments (N,) int64 in 0..k-1; centroids (k, d) float32 (rows of empty clusters
    are zero); n_empty_fixed: k-means' re-seeded empty clusters."""
    assignments: torch.Tensor
    centroids: torch.Tensor
    n_empty_fixed: int = 0


def cluster(x: torch.Tensor, k: int, algorithm: str = "kmeans", seed: int = 0, n_iters: int = 20) -> Clustering:
    """Cluster x (N, d) into at most k groups with k-means (3.2.1) or PIC (3.2.2).

    PIC finds its own number of clusters C. The classifier has k outputs, so when C > k
    the points of all but the k largest PIC clusters join the nearest of those k
    clusters' centroids (squared L2); when C < k the extra classes stay empty.
    """
    x = x.float().cpu()
    if algorithm == "kmeans":
        # Every process holds all N rows (the whole-dataset pass gathers them): each clusters
        # its 1/world share, k-means all-reduces the sums (the same init and steps as one
        # process over x, ops/kmeans.py), and the shares' assignments are gathered back.
        share = x.tensor_split(dist.world_size())[dist.rank()]
        r = kmeans(share, min(k, len(x)), n_iters=n_iters, seed=seed)
        centroids = torch.zeros(k, x.shape[1])
        centroids[:len(r.centroids)] = r.centroids
        return Clustering(dist.all_gather_uneven(r.assignments), centroids, r.n_empty_fixed)
    if algorithm != "pic":
        raise ValueError(f"clustering must be 'kmeans' or 'pic', got {algorithm!r}")
    assignments = pic(x).assignments
    sizes = torch.bincount(assignments)
    keep = torch.argsort(sizes, descending=True, stable=True)[:k]         # the k largest clusters
    new_id = torch.full((len(sizes),), -1, dtype=torch.long)
    new_id[keep] = torch.arange(len(keep))
    labels = new_id[assignments]
    centroids = torch.zeros(k, x.shape[1]).index_add_(0, labels.clamp_min(0)[labels >= 0], x[labels >= 0])
    centroids[:len(keep)] /= sizes[keep, None].float()
    orphans = labels < 0
    if orphans.any():
        labels[orphans] = torch.cdist(x[orphans], centroids[:len(keep)]).argmin(1)
    return Clustering(labels, centroids)


def stats(assignments: torch.Tensor, k: int, previous: torch.Tensor | None, n_empty_fixed: int = 0,
          truth: torch.Tensor | None = None) -> torch.Tensor:
    """Values of :data:`STAT_NAMES` as a float tensor: non-empty clusters, largest and
    smallest non-empty size over the mean size N / k, NMI with the previous assignment
    (Fig. 3.3b; -1 when there is none), empty clusters re-seeded, NMI with the class
    labels ``truth`` (Fig. 3.3a; -1 without labels)."""
    sizes = torch.bincount(assignments.cpu(), minlength=k).float()
    mean = len(assignments) / k
    filled = sizes[sizes > 0]
    prev_nmi = -1.0
    if previous is not None and bool((previous >= 0).all()):
        prev_nmi = nmi(np.asarray(previous.cpu()), np.asarray(assignments.cpu()))
    return torch.tensor([float(len(filled)), float(filled.max()) / mean, float(filled.min()) / mean,
                         prev_nmi, float(n_empty_fixed), label_nmi(truth, assignments)])


def stat_logs(buffer: torch.Tensor, names: tuple[str, ...] = STAT_NAMES) -> dict[str, torch.Tensor]:
    """A statistics buffer (``cluster_stats``: :data:`STAT_NAMES`) as log entries named
    ``names``: 0-dim tensors of one copy, so nothing is read back to the host at the step."""
    return dict(zip(names, buffer.detach().float().clone().unbind(), strict=True))
