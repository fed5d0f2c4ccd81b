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

Numerics: two equivalent computations, in float32 (float64 for float64 input) whatever the
input precision, without gradient (``domain``):

- linear (the thesis' pseudocode): one ``exp((Z - max Z) / eps)``, then the column and row
  divisions. Every entry starts in ``[exp(-R), 1]`` with ``R = (max Z - min Z) / eps``, so no
  column can be all zeros; after a column step each entry is at least ``exp(-R) / B``, and
  after the first iteration every row holds an entry of at least ``1 / (B K)``, so no row
  can be all zeros either, and no division overflows (``1 / colsum <= exp(R)``). That
  holds while ``R <= 80`` in float32 (``exp(-87.3)`` is its smallest normal number; 700 in
  float64). SwAV's cosine scores in [-1, 1] with eps 0.05 give R <= 40. One exp instead of
  2 n_iters + 1 (its speed on SwAV's queue shape: ``benchmarks/sinkhorn_speed.py``,
  BENCHMARKS.md "CPU speed").
- log (log-sum-exp normalisations): finite codes for scores of any magnitude.

``domain="auto"`` (default) takes the linear domain when ``R`` (over every process's rows)
is at most that bound and falls back to the log domain otherwise; ``"linear"`` and
``"log"`` force one (``"linear"`` beyond the bound may give NaN).

Distributed (section 4.2.5): with a process group, each process passes its own rows and
gets its own rows back, equal to the rows one process would compute over the
concatenated batch. Only per-prototype statistics are shared: for every column step each
process gathers the (K,) sums (log-sums in the log domain) of its rows (one ``all_gather``
of K numbers per process), never features or scores. Batches may differ in size across processes (at
least one row each), and every process must call with the same K, eps, n_iters and domain;
the linear domain also shares the global max and min of the scores (2 numbers a process),
so every process takes the same domain.
Rows that every process holds alike (the scores of a gathered queue such as
``nolabel.ops.queue.FeatureQueue``, section 4.2.3) would count once per process: pass
each such row on one process only, e.g. ``queue_scores.tensor_split(world_size())[rank()]``.
"""
from __future__ import annotations

import torch

from nolabel.ops.dist import all_gather

DOMAINS = ("auto", "linear", "log")
# Largest (max - min) / eps of the scores for which the linear domain is safe (module docstring):
# a margin of 7 below -log(smallest normal number), 87.3 in float32 and 708.4 in float64.
LINEAR_RANGE = {torch.float32: 80.0, torch.float64: 700.0}


def _global_max_min(x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(max as a 0-d tensor, min as a float) of ``x`` over the rows of every process."""
    local = torch.stack([x.max(), -x.min()])                     # (2,)
    both = all_gather(local[None]).amax(dim=0)                   # (2,) over processes
    return both[0], -float(both[1])


def _sum_over_batch(q: torch.Tensor) -> torch.Tensor:
    """``sum_b q[b, k]`` over the rows of every process. (B, K) -> (K,)."""
    return all_gather(q.sum(dim=0)[None]).sum(dim=0)


def _log_sum_over_batch(log_q: torch.Tensor) -> torch.Tensor:
    """``log sum_b exp(log_q[b, k])`` over the rows of every process. (B, K) -> (K,)."""
    local = torch.logsumexp(log_q, dim=0)                        # (K,) this process
    per_process = all_gather(local[None])                         # (world, K)
    return torch.logsumexp(per_process, dim=0)                    # (K,)


@torch.no_grad()
def sinkhorn_knopp(scores: torch.Tensor, eps: float = 0.05, n_iters: int = 3, domain: str = "auto") -> torch.Tensor:
    """Soft equipartitioned codes Q of Eq. 4.5 from prototype scores (section 4.2.2).

    scores: (B, K) scores of this process's samples against the K prototypes (in SwAV,
    dot products of l2-normalised features and prototypes). eps: entropy regularisation
    of Prob. 4.4 (0.05 in section 4.2.5; smaller is sharper). n_iters: Sinkhorn-Knopp
    iterations, each a column then a row normalisation (3 in section 4.2.2). domain: "auto"
    (linear when the scores' range allows it, else log), "linear" or "log" (module docstring).

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
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {', '.join(DOMAINS)}, got {domain!r}")
    dtype = torch.float64 if scores.dtype == torch.float64 else torch.float32
    x = scores.detach().to(dtype)
    if domain != "log":
        top, bottom = _global_max_min(x)
        if domain == "linear" or (float(top) - bottom) / eps <= LINEAR_RANGE[dtype]:
            q = (x - top).div_(eps).exp_()                                      # (B, K) in (0, 1]
            for _ in range(int(n_iters)):
                q /= _sum_over_batch(q)                                         # each prototype: total mass 1
                q /= q.sum(dim=1, keepdim=True)                                 # each sample: sums to 1
            return q
    log_q = x / eps                                                           # (B, K) log exp(Z / eps)
    for _ in range(int(n_iters)):
        log_q = log_q - _log_sum_over_batch(log_q)                           # each prototype: total mass 1
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True)          # each sample: sums to 1
    return torch.exp(log_q)
