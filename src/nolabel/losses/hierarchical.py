"""DeeperCluster's hierarchical loss (thesis section 3.3.1, Eqs. 3.3-3.4; DeeperCluster
paper, Eq. 5).

Targets. An image x_n is rotated by ``rotation`` r_n in {0, 1, 2, 3} (0, 90, 180, 270
degrees) and its non-rotated features belong to super-cluster c_n in {0..m-1} (k-means
with m centroids on the whole data set) and to sub-cluster z_n in {0..k-1} (k-means
with k centroids inside super-cluster c_n). The S = 4m super-classes are the pairs
(rotation, super-cluster), numbered ``rotation * m + super_cluster``
(:func:`super_class_targets`). Each super-class s has its own sub-class head W_s with k
outputs; an image's sub-target z_n is the same for its four rotations, but each rotation
is scored by a different head.

Loss (Eq. 3.4), with l the negative log-softmax:
``1/B sum_n [ l(V f(x_n), y_n) + l(W_{y_n} f(x_n), z_n) ]``; only the head of the true
super-class y_n contributes (``sum_s y_ns l(W_s f(x_n), z_n^s)`` has one non-zero term).

Interface: ``super_logits`` (B, S) from V, and ``sub_logits`` in either form:
- (S, B, k): every head on every sample; the true head's row is picked here
  (simple, one process);
- (B, k): each sample's own head already selected by the caller (the distributed
  layout of thesis 3.3.1, where a communication group evaluates only its super-class's
  head on its own images).
Super-classes with fewer than k sub-clusters can pad their logits with ``-inf``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nolabel.ops.precision import float32_region

__all__ = ["super_class_targets", "split_super_class", "hierarchical_loss_terms", "hierarchical_loss"]


def super_class_targets(rotation: torch.Tensor, super_cluster: torch.Tensor, m: int,
                        n_rotations: int = 4) -> torch.Tensor:
    """Super-class index ``rotation * m + super_cluster`` in 0..n_rotations*m - 1.

    rotation: (B,) int in 0..n_rotations-1; super_cluster: (B,) int in 0..m-1. Returns (B,) int64.
    """
    if rotation.shape != super_cluster.shape:
        raise ValueError(f"rotation {tuple(rotation.shape)} and super_cluster "
                         f"{tuple(super_cluster.shape)} must have the same shape")
    if m < 1:
        raise ValueError(f"m must be >= 1, got {m}")
    if rotation.numel() and (int(rotation.min()) < 0 or int(rotation.max()) >= n_rotations):
        raise ValueError(f"rotation labels must lie in [0, {n_rotations}), got "
                         f"[{int(rotation.min())}, {int(rotation.max())}]")
    if super_cluster.numel() and (int(super_cluster.min()) < 0 or int(super_cluster.max()) >= m):
        raise ValueError(f"super_cluster labels must lie in [0, {m}), got "
                         f"[{int(super_cluster.min())}, {int(super_cluster.max())}]")
    return rotation.long() * m + super_cluster.long()


def split_super_class(super_targets: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`super_class_targets`: (rotation (B,), super_cluster (B,))."""
    return super_targets // m, super_targets % m


def _own_head_logits(sub_logits: torch.Tensor, super_targets: torch.Tensor, n_super: int) -> torch.Tensor:
    """(B, k) logits of each sample's own super-class head from (S, B, k) or (B, k)."""
    batch = super_targets.shape[0]
    if sub_logits.dim() == 2:
        if sub_logits.shape[0] != batch:
            raise ValueError(f"sub_logits (B, k) has {sub_logits.shape[0]} rows for a batch of {batch}")
        return sub_logits
    if sub_logits.dim() == 3:
        if sub_logits.shape[:2] != (n_super, batch):
            raise ValueError(f"sub_logits (S, B, k) must start with ({n_super}, {batch}), "
                             f"got {tuple(sub_logits.shape)}")
        return sub_logits[super_targets, torch.arange(batch, device=sub_logits.device)]
    raise ValueError(f"sub_logits must be (S, B, k) or (B, k), got shape {tuple(sub_logits.shape)}")


@float32_region
def hierarchical_loss_terms(super_logits: torch.Tensor, sub_logits: torch.Tensor,
                            super_targets: torch.Tensor, sub_targets: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """The two batch-mean terms of Eq. 3.4: (super-class cross-entropy, sub-class
    cross-entropy within the true super-class), each a scalar, computed in float32.

    super_logits: (B, S); sub_logits: (S, B, k) or (B, k) (module docstring);
    super_targets: (B,) int in 0..S-1; sub_targets: (B,) int in 0..k-1.
    """
    if super_logits.dim() != 2:
        raise ValueError(f"super_logits must be (B, S), got shape {tuple(super_logits.shape)}")
    batch, n_super = super_logits.shape
    if super_targets.shape != (batch,) or sub_targets.shape != (batch,):
        raise ValueError(f"super_targets {tuple(super_targets.shape)} and sub_targets "
                         f"{tuple(sub_targets.shape)} must both be ({batch},)")
    own = _own_head_logits(sub_logits, super_targets.long(), n_super)    # (B, k)
    super_term = F.cross_entropy(super_logits.float(), super_targets.long())
    sub_term = F.cross_entropy(own.float(), sub_targets.long())
    return super_term, sub_term


def hierarchical_loss(super_logits: torch.Tensor, sub_logits: torch.Tensor,
                      super_targets: torch.Tensor, sub_targets: torch.Tensor) -> torch.Tensor:
    """Eq. 3.4: ``mean_n [CE(super_logits_n, y_n) + CE(own sub-head logits_n, z_n)]``.

    Shapes as in :func:`hierarchical_loss_terms`. Returns a scalar.
    """
    super_term, sub_term = hierarchical_loss_terms(super_logits, sub_logits, super_targets, sub_targets)
    return super_term + sub_term
