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

``sinkhorn_labels`` is the whole-dataset variant SeLa uses (section 4.4): hard labels of all
N images in the log domain, a chunk of rows at a time, on one process, stopping once the
columns are balanced; with ``tol=0`` its labels are ``sinkhorn_knopp(...).argmax(1)``.
"""
from __future__ import annotations

import math

import torch

from nolabel.ops.dist import all_gather

DOMAINS = ("auto", "linear", "log")
# Largest (max - min) / eps of the scores for which the linear domain is safe (module docstring):
# a margin of 7 below -log(smallest normal number), 87.3 in float32 and 708.4 in float64.
LINEAR_RANGE = {torch.float32: 80.0, torch.float64: 700.0}


def _global_max_min(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(max, min) of ``x`` over the rows of every process, as 0-d tensors (nothing read back)."""
    local = torch.stack([x.max(), -x.min()])                     # (2,)
    both = all_gather(local[None]).amax(dim=0)                   # (2,) over processes
    return both[0], -both[1]


def _sum_over_batch(q: torch.Tensor) -> torch.Tensor:
    """``sum_b q[b, k]`` over the rows of every process. (B, K) -> (K,)."""
    return all_gather(q.sum(dim=0)[None]).sum(dim=0)


def _log_sum_over_batch(log_q: torch.Tensor) -> torch.Tensor:
    """``log sum_b exp(log_q[b, k])`` over the rows of every process. (B, K) -> (K,)."""
    local = torch.logsumexp(log_q, dim=0)                        # (K,) this process
    per_process = all_gather(local[None])                         # (world, K)
    return torch.logsumexp(per_process, dim=0)                    # (K,)


@torch.no_grad()
def sinkhorn_knopp(scores: torch.Tensor, eps: float = 0.05, n_iters: int = 3, domain: str = "auto",
                   max_abs: float | None = None) -> torch.Tensor:
    """Soft equipartitioned codes Q of Eq. 4.5 from prototype scores (section 4.2.2).

    scores: (B, K) scores of this process's samples against the K prototypes (in SwAV,
    dot products of l2-normalised features and prototypes). eps: entropy regularisation
    of Prob. 4.4 (0.05 in section 4.2.5; smaller is sharper). n_iters: Sinkhorn-Knopp
    iterations, each a column then a row normalisation (3 in section 4.2.2). domain: "auto"
    (linear when the scores' range allows it, else log), "linear" or "log" (module docstring).
    max_abs: a bound on |scores| the caller guarantees (1 for cosine scores, up to rounding):
    ``auto`` then decides from ``2 * max_abs / eps`` without reading the scores' range back
    to the host, so a training step does not wait for the device (issue 14).

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
        if domain == "linear":
            linear = True
        elif max_abs is not None:            # the caller's bound on |scores|: no read-back of the range
            linear = 2.0 * max_abs / eps <= LINEAR_RANGE[dtype]
        else:
            linear = (float(top) - float(bottom)) / eps <= LINEAR_RANGE[dtype]
        if linear:
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


@torch.no_grad()
def sinkhorn_labels(features: torch.Tensor, prototypes: torch.Tensor, eps: float, n_iters: int = 100,
                    tol: float = 1e-3, chunk: int = 4096) -> tuple[torch.Tensor, int]:
    """Hard equipartitioned labels of a whole dataset (SeLa's rounding of Eq. 4.5, 4.2.2).

    features: (N, d), prototypes: (K, d) (l2-normalised rows: the scores Z are cosines).
    Returns int64 (N,) labels ``argmax_k Q[n, k]``, Q the Sinkhorn-Knopp iterate of Prob. 4.4,
    and the number of iterations run. With ``tol=0`` this is exactly
    ``sinkhorn_knopp(features @ prototypes.T, eps, n_iters).argmax(1)``; otherwise it stops
    early once an iteration would change no prototype's total mass by more than ``tol``
    (relative), i.e. the columns are balanced. The (N, K) matrix is never held:
    Q = Diag(u) exp(Z / eps) Diag(v) (Eq. 4.5), so only log u (N,) and log v (K,) are kept
    and the scores are recomputed ``chunk`` rows at a time. Runs on one process over all
    rows (no cross-process sums): pass the whole dataset.
    """
    f, w = features.float(), prototypes.float()
    n = f.shape[0]
    log_u = torch.zeros(n, device=f.device)
    log_v = torch.zeros(w.shape[0], device=f.device)
    labels = torch.empty(n, dtype=torch.long, device=f.device)

    def scores(start):                                    # rows start..start+chunk of Z / eps: (c, K)
        return f[start:start + chunk] @ w.T / eps

    for it in range(n_iters):
        # columns: every prototype gets total mass 1 (log v = -log sum_n u_n exp(Z_nk / eps))
        per_chunk = [torch.logsumexp(scores(s) + log_u[s:s + chunk, None], dim=0) for s in range(0, n, chunk)]
        new_log_v = -torch.logsumexp(torch.stack(per_chunk), dim=0)                     # (K,)
        change = new_log_v - log_v       # + a constant: row sums 1 leave columns at N / K, not 1
        if it > 0 and float(change.max() - change.min()) < math.log1p(tol):
            return labels, it
        log_v = new_log_v
        # rows: every image sums to 1; the labels are the row maxima of exp(Z / eps) v
        for s in range(0, n, chunk):
            z = scores(s) + log_v                                                       # (c, K)
            log_u[s:s + chunk] = -torch.logsumexp(z, dim=1)
            labels[s:s + chunk] = z.argmax(dim=1)
    return labels, n_iters
