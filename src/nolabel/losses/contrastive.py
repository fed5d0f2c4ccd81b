"""Contrastive losses: SimCLR's NT-Xent and MoCo's InfoNCE against a queue.

Pure functions of tensors: temperatures are arguments, the queue lives in
:class:`nolabel.ops.queue.FeatureQueue`. Computed in float32 whatever the input precision
(float16/bfloat16 are upcast; float64 stays float64).

References:
    SimCLR: Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive
    Learning of Visual Representations", ICML 2020 (Section 2.1, Eq. 1).
    MoCo: He, Fan, Wu, Xie, Girshick, "Momentum Contrast for Unsupervised Visual
    Representation Learning", CVPR 2020 (Section 3.1, Eq. 1); MoCo v2: Chen, Fan,
    Girshick, He, "Improved Baselines with Momentum Contrastive Learning", 2020.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nolabel.ops.dist import all_gather_with_grad, rank
from nolabel.ops.precision import float32_region


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """float16 / bfloat16 -> float32; float32 and float64 unchanged (float64 keeps gradcheck exact)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _check_pair(name: str, a: torch.Tensor, b: torch.Tensor) -> None:
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(f"{name} expects two (N, D) tensors of the same shape, "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} needs N >= 1 and D >= 1, got {tuple(a.shape)}")


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


@float32_region
def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SimCLR's NT-Xent loss (Eq. 1) over the 2N views of the batch.

    For every view ``a`` (anchor) with positive ``p`` (the other view of the same image):
    ``l(a) = -log( exp(sim(a, p) / tau) / sum_{k != a} exp(sim(a, k) / tau) )`` where
    ``sim`` is the cosine similarity and ``k`` runs over all 2N views but ``a`` (the 2N-2
    other images' views are the negatives). Returns the mean of ``l`` over the 2N
    anchors, a scalar float32.

    z1, z2: (N, D) projections of the first and second views, row i of both from image
    i; l2-normalised here. temperature: tau; 0.1 is SimCLR's ImageNet choice
    (Section 5.1, Table 5); for CIFAR-10 (Appendix B.9) it reports 0.5 as best.

    Under a process group the negatives are the views of every process, gathered with
    gradient (:func:`nolabel.ops.dist.all_gather_with_grad`); the anchors are this
    process's 2N views. Averaged over processes (what DDP does to the gradients), this
    is exactly the loss of one process over the concatenated global batch (the value each
    process returns is its own anchors' mean: ``all_reduce_mean`` a detached copy to log
    the global loss). Every process must pass the same N. With N = 1 and one process
    there is no negative and the loss is 0.
    """
    _check_pair("nt_xent", z1, z2)
    _check_temperature(temperature)
    n = z1.shape[0]
    local = F.normalize(_upcast(torch.cat([z1, z2])), dim=1)            # (2N, D): views 1 then 2
    every = all_gather_with_grad(local)                                 # (W * 2N, D), rank order
    logits = local @ every.T / temperature                              # (2N, W * 2N)
    offset = rank() * 2 * n                                             # this process's columns
    rows = torch.arange(2 * n, device=logits.device)
    self_cols = offset + rows
    positive_cols = offset + (rows + n) % (2 * n)                       # view 1 <-> view 2
    cols = torch.arange(logits.shape[1], device=logits.device)
    logits = logits.masked_fill(cols[None, :] == self_cols[:, None], float("-inf"))  # k != a
    return F.cross_entropy(logits, positive_cols)


@float32_region
def info_nce(query: torch.Tensor, key: torch.Tensor, negatives: torch.Tensor,
             temperature: float = 0.2) -> torch.Tensor:
    """MoCo's InfoNCE loss (MoCo Eq. 1): a (K+1)-way softmax classifying the positive key.

    ``l_i = -log( exp(q_i . k_i / tau) / (exp(q_i . k_i / tau) + sum_j exp(q_i . n_j / tau)) )``,
    averaged over the N queries; a scalar float32. All vectors are l2-normalised here.

    query: (N, D) from the query encoder (gradient flows). key: (N, D) positive keys from
    the momentum encoder; negatives: (M, D) keys of earlier batches (the queue), M may
    be 0, in which case the loss is 0. Both are detached here (no gradient to the
    keys). temperature: 0.2 for MoCo v2 (Chen et al. 2020, Table 1); MoCo v1 used 0.07.

    The loss of one query direction; MoCo v2 as published uses one direction, the
    symmetric variant averages ``info_nce(q1, k2, Q) + info_nce(q2, k1, Q)``. Nothing is
    gathered: the method pushes the gathered keys to the queue after the step.
    """
    _check_pair("info_nce (query, key)", query, key)
    _check_temperature(temperature)
    if negatives.dim() != 2 or negatives.shape[1] != query.shape[1]:
        raise ValueError(f"info_nce expects negatives of shape (M, {query.shape[1]}), "
                         f"got {tuple(negatives.shape)}")
    q = F.normalize(_upcast(query), dim=1)                               # (N, D)
    k = F.normalize(key.detach().to(q.dtype), dim=1)                     # (N, D)
    neg = F.normalize(negatives.detach().to(q.dtype), dim=1)             # (M, D)
    positive = (q * k).sum(dim=1, keepdim=True)                          # (N, 1)
    logits = torch.cat([positive, q @ neg.T], dim=1) / temperature       # (N, 1 + M)
    target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)  # positive at index 0
    return F.cross_entropy(logits, target)
