"""Sinkhorn-Knopp equipartition of a batch over prototypes (thesis section 4.2.2).

SwAV turns the prototype scores ``Z`` of a batch into soft codes ``Q`` that solve
Prob. 4.4, ``max_Q Tr(Q^T Z) + eps H(Q)`` over the transport polytope of Eq. 4.3. The
solution has the form of Eq. 4.5, ``Q* = Diag(u) exp(Z / eps) Diag(v)``, and the
scalings are found by alternately normalising the prototypes (columns here) and the
samples (rows), 3 iterations in the thesis.

Convention (batch-major, unlike the thesis' K x B matrix): ``scores`` and the returned
codes are (B, K). Each iteration divides every prototype column by its sum over the
batch, then every sample row by its sum over the prototypes, exactly as the thesis'
pseudocode. So the returned rows sum to 1 (each code is a distribution over K
prototypes), and the columns sum to approximately B / K, where B is the *global* batch
(every process): each code "sums to 1" and each prototype "is used B / K times in the
batch", the reading of Eq. 4.3 given below it. Column sums are only approximate after a few iterations; they converge
to B / K as ``n_iters`` grows. The scale a column is normalised to does not matter: the
row step that follows removes any constant factor, so no batch size enters the result.

One iteration (``n_iters=1``) equals ``softmax(Z / eps, dim=0)`` (over the batch axis)
followed by dividing each row by its sum, the simplification of section 4.2.2; see
``tests/ops/test_sinkhorn.py``.

Numerics: the iterations run in log space (log-sum-exp normalisations), so scores of any
magnitude give finite codes, never the overflow of ``exp(Z / eps)`` nor the 0/0 of a
column or row that underflows entirely. They run in float32 (float64 for float64
input), whatever the input precision, and without gradient.

Distributed (section 4.2.5): with a process group, each process passes its own rows and
gets its own rows back, equal to the rows one process would compute over the
concatenated batch. Only per-prototype statistics are shared: for every column step each
process gathers the (K,) log-sums of its rows (one ``all_gather`` of K numbers per
process), never features or scores. Batches may differ in size across processes (at
least one row each), and every process must call with the same K, eps and n_iters.
Rows that every process holds alike (the scores of a gathered queue such as
``nolabel.ops.queue.FeatureQueue``, section 4.2.3) would count once per process: pass
each such row on one process only, e.g. ``queue_scores.tensor_split(world_size())[rank()]``.
"""
from __future__ import annotations

import torch

from nolabel.ops.dist import all_gather


def _log_sum_over_batch(log_q: torch.Tensor) -> torch.Tensor:
    """``log sum_b exp(log_q[b, k])`` over the rows of every process. (B, K) -> (K,)."""
    local = torch.logsumexp(log_q, dim=0)                        # (K,) this process
    per_process = all_gather(local[None])                         # (world, K)
    return torch.logsumexp(per_process, dim=0)                    # (K,)


@torch.no_grad()
def sinkhorn_knopp(scores: torch.Tensor, eps: float = 0.05, n_iters: int = 3) -> torch.Tensor:
    """Soft equipartitioned codes Q of Eq. 4.5 from prototype scores (section 4.2.2).

    scores: (B, K) scores of this process's samples against the K prototypes (in SwAV,
    dot products of l2-normalised features and prototypes). eps: entropy regularisation
    of Prob. 4.4 (0.05 in section 4.2.5; smaller is sharper). n_iters: Sinkhorn-Knopp
    iterations, each a column then a row normalisation (3 in section 4.2.2).

    Returns float32 (float64 for float64 input) codes (B, K), no gradient: every row sums
    to 1; over the global batch every column sums to about B_global / K. See the module
    docstring for the convention and the distributed behaviour.
    """
    if scores.dim() != 2:
        raise ValueError(f"sinkhorn_knopp expects (batch, prototypes) scores, got shape {tuple(scores.shape)}")
    if scores.shape[0] < 1 or scores.shape[1] < 1:
        raise ValueError(f"sinkhorn_knopp needs at least one sample and one prototype, got shape {tuple(scores.shape)}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if int(n_iters) != n_iters or n_iters < 1:
        raise ValueError(f"n_iters must be a positive integer, got {n_iters}")
    dtype = torch.float64 if scores.dtype == torch.float64 else torch.float32
    log_q = scores.detach().to(dtype) / eps                                   # (B, K) log exp(Z / eps)
    for _ in range(int(n_iters)):
        log_q = log_q - _log_sum_over_batch(log_q)                           # each prototype: total mass 1
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True)          # each sample: sums to 1
    return torch.exp(log_q)
