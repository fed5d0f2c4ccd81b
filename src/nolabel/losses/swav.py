"""SwAV swapped-prediction loss (thesis sections 4.2.1 and 4.2.4, Eqs. 4.1, 4.2, 4.6).

Pure functions of tensors: the codes come from :func:`nolabel.ops.sinkhorn.sinkhorn_knopp`
and the temperature is an argument.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nolabel.ops.precision import float32_region


@float32_region
def swav_loss(scores: torch.Tensor, codes: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Eq. 4.6: mean over pairs (code view c, other view v != c) of the cross-entropy
    ``H(q_c, p_v) = -sum_k q_c^(k) log p_v^(k)`` with ``p_v = softmax(scores_v / T)``
    (Eq. 4.1), averaged over the batch.

    scores: (V, B, K) prototype scores of every view, the V_c code (global) views first.
    codes: (V_c, B, K) codes of the first V_c views, each row a distribution over the K
    prototypes (treated as fixed: no gradient flows into them, Eq. 4.2). temperature:
    tau of Eq. 4.1, 0.1 in section 4.2.5.

    Averaging: Eq. 4.6 sums over the V_c * (V - 1) pairs of one image; here the pair
    losses are averaged, i.e. ``loss = 1 / (V_c (V - 1)) sum_c sum_{v != c} 1 / B
    sum_b H(q_c[b], p_v[b])``, so its scale does not grow with the number of views.
    With V == 2 and V_c == 2 this is the symmetric two-view loss. Returns a float32
    scalar.
    """
    if scores.dim() != 3 or codes.dim() != 3:
        raise ValueError(f"swav_loss expects (views, batch, K) tensors, got scores {tuple(scores.shape)} "
                         f"and codes {tuple(codes.shape)}")
    n_views, n_code_views = scores.shape[0], codes.shape[0]
    if codes.shape[1:] != scores.shape[1:]:
        raise ValueError(f"codes (batch, K) = {tuple(codes.shape[1:])} do not match scores "
                         f"(batch, K) = {tuple(scores.shape[1:])}")
    if n_views < 2:
        raise ValueError(f"swapped prediction needs at least 2 views, got {n_views}")
    if not 1 <= n_code_views <= n_views:
        raise ValueError(f"{n_code_views} code views for {n_views} views; need 1 <= V_c <= V")
    q = codes.detach().float()                                           # (V_c, B, K)
    log_p = F.log_softmax(scores.float() / temperature, dim=-1)          # (V, B, K)
    # cross[c, v] = mean_b sum_k q[c,b,k] * log_p[v,b,k]
    cross = torch.einsum("cbk,vbk->cv", q, log_p) / q.shape[1]           # (V_c, V)
    other = ~torch.eye(n_code_views, n_views, dtype=torch.bool, device=cross.device)  # v != c
    return -cross[other].mean()


@torch.no_grad()
def normalize_prototypes_(weight: torch.Tensor) -> torch.Tensor:
    """l2-normalise the prototype rows of ``weight`` (K, D) in place, without gradient;
    returns ``weight``. The SwAV code linked in section 4.2.5 does this before every
    training step, so that with l2-normalised features the scores are cosine similarities
    in [-1, 1], the range for which eps = 0.05 and tau = 0.1 were chosen."""
    if weight.dim() != 2:
        raise ValueError(f"prototype weight must be (K, D), got shape {tuple(weight.shape)}")
    weight.copy_(F.normalize(weight, dim=1))
    return weight
