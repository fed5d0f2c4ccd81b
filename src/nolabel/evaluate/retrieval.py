"""Class-level retrieval with frozen features (thesis 5.5.1: k-NN retrieval, mAP).

Every test image queries the whole training set by cosine similarity; a training
image of the query's class is relevant. Reported: mAP (non-interpolated AP, pessimistic
ties: :func:`nolabel.metrics.mean_average_precision`) and recall@k (at least
one relevant image among the k nearest). Queries are ranked ``chunk_size`` at a time,
so the (Q, N) similarity matrix is never held whole.
"""
from __future__ import annotations

import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from nolabel.evaluate.context import EvalContext, EvalError
from nolabel.metrics import mean_average_precision, recall_at_k

KS = (1, 5, 10)


def retrieval_scores(query_x, query_y, db_x, db_y, ks: Sequence[int] = KS, chunk_size: int = 256) -> dict:
    """``{"map", "recall@k"..., "n_queries", "n_db", "n_scored"}``; all scores in [0, 1].

    query_x (Q, D), db_x (N, D) features; query_y (Q,), db_y (N,) class indices. Queries
    whose class is absent from the database are skipped (``n_scored`` counts the rest).
    """
    q = F.normalize(torch.as_tensor(query_x).float(), dim=1)
    db = F.normalize(torch.as_tensor(db_x).float(), dim=1)
    qy, dy = torch.as_tensor(query_y).long(), torch.as_tensor(db_y).long()
    present = torch.isin(qy, dy)
    ap_sum, hit_sums, scored = 0.0, {int(k): 0.0 for k in ks}, 0
    for start in range(0, q.shape[0], chunk_size):
        rows = slice(start, start + chunk_size)
        n = int(present[rows].sum())
        if n == 0:
            continue
        sim = q[rows] @ db.T  # (m, N)
        ap_sum += mean_average_precision(sim, qy[rows], dy, chunk_size=chunk_size) * n
        for k, r in recall_at_k(sim, qy[rows], dy, ks, chunk_size=chunk_size).items():
            hit_sums[k] += r * n
        scored += n
    if scored == 0:
        raise EvalError("retrieval: no test class occurs in the training set, so no query has a relevant item")
    out = {"map": ap_sum / scored}
    out.update({f"recall@{k}": v / scored for k, v in hit_sums.items()})
    out.update(n_queries=int(q.shape[0]), n_db=int(db.shape[0]), n_scored=scored)
    return out


def retrieval_protocol(ctx: EvalContext, ks: Sequence[int] = KS, max_queries: int | None = None,
                       seed: int = 0) -> dict:
    """Test queries against the training set; ``max_queries`` samples that many queries (seeded)."""
    ctx.require_labels("retrieval", "train", "test")
    if not ks or min(ks) < 1:
        raise EvalError(f"--ks {list(ks)}: give positive integers, e.g. 1 5 10")
    t0 = time.time()
    train, test = ctx.features("train", "retrieval"), ctx.features("test", "retrieval")
    qx, qy = test.x, test.y
    if max_queries is not None and max_queries < qx.shape[0]:
        pick = torch.randperm(qx.shape[0], generator=torch.Generator().manual_seed(seed))[:max_queries]
        qx, qy = qx[pick], qy[pick]
    result = retrieval_scores(qx, qy, train.x, train.y, ks)
    result["seconds"] = round(time.time() - t0, 2)
    return result
