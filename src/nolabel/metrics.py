"""Pure evaluation metrics: clustering agreement, retrieval, attention masks.

Every score here is a fraction in ``[0, 1]`` (not a percent). Inputs may be torch
tensors, numpy arrays or lists; nothing is modified in place.

* Clustering (thesis 3.2.2, 3.3.3): :func:`nmi` exactly as the thesis defines it,
  :func:`ami`, :func:`ari`, :func:`purity`, :func:`contingency`.
* Retrieval (thesis 5.5.1, Tables 5.3 and 5.4): :func:`average_precision`,
  :func:`mean_average_precision`, :func:`recall_at_k`, :func:`copy_detection_map`.
  Ranks are by decreasing score; at equal scores irrelevant items rank first
  ("pessimistic" ties), so a collapsed embedding, whose scores all tie, cannot score
  well through the accident of database order.
* Attention (thesis 5.5.2, Fig. 5.5): :func:`attention_mass_mask`, :func:`jaccard`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def _assignment(x, name: str) -> np.ndarray:
    """A 1-D, non-empty array of integer (or string) ids; floats are refused."""
    arr = np.asarray(x.detach().cpu().numpy() if isinstance(x, Tensor) else x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (n,), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: a partition needs at least one sample")
    if arr.dtype.kind in "fc":
        raise ValueError(f"{name} must hold integer cluster or class ids, got {arr.dtype}")
    return arr


def _pair(a, b, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    a, b = _assignment(a, names[0]), _assignment(b, names[1])
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} and {names[1]} differ in length: {a.shape[0]} vs {b.shape[0]}")
    return a, b


def _joint(a, b, names: tuple[str, str]):
    """(counts of the non-empty cells, their row ids, column ids, row sizes, column sizes)."""
    a, b = _pair(a, b, names)
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    ai, bi = ai.reshape(-1).astype(np.int64), bi.reshape(-1).astype(np.int64)
    kb = int(bi.max()) + 1
    cells, n_ij = np.unique(ai * kb + bi, return_counts=True)  # sparse: never a (Ka, Kb) table
    return n_ij, cells // kb, cells % kb, np.bincount(ai), np.bincount(bi)


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def contingency(a, b) -> Tensor:
    """(Ka, Kb) int64 table, ``table[i, j] = #{n : a_n = i-th value of a, b_n = j-th value of b}``.

    a, b: (N,) ids; rows and columns follow the sorted distinct values of ``a`` and ``b``.
    """
    n_ij, rows, cols, size_a, size_b = _joint(a, b, ("a", "b"))
    table = torch.zeros(len(size_a), len(size_b), dtype=torch.int64)
    table[torch.from_numpy(rows), torch.from_numpy(cols)] = torch.from_numpy(n_ij)
    return table


def nmi(a, b) -> float:
    """Normalized mutual information ``I(A;B) / sqrt(H(A) H(B))`` (thesis 3.2.2, "Relation
    between clusters and labels").

    a, b: (N,) assignments of the same samples (clusters, labels, or the clusters of two
    epochs). Natural logarithms (the ratio does not depend on the base). 0 when A and B
    are independent, 1 when each determines the other; when only B is a function of A,
    ``I = H(B)`` and NMI is ``sqrt(H(B) / H(A)) < 1`` (the thesis' "predictable from the
    other" holds for both directions).

    Degenerate case: if one assignment has a single cluster its entropy is 0 and the
    ratio is 0/0. We return **0.0** when exactly one of them has a single cluster (a
    constant assignment carries no information about the other; a collapsed clustering
    scores 0) and **1.0** when both do (two identical partitions). This matches
    scikit-learn's ``normalized_mutual_info_score(average_method="geometric")``.
    """
    n_ij, rows, cols, size_a, size_b = _joint(a, b, ("a", "b"))
    h_a, h_b = _entropy(size_a), _entropy(size_b)
    if h_a == 0.0 or h_b == 0.0:
        return 1.0 if h_a == h_b else 0.0
    n = float(n_ij.sum())
    log_ratio = np.log(n_ij) + np.log(n) - np.log(size_a[rows]) - np.log(size_b[cols])  # log p_ij / (p_i p_j)
    mi = float((n_ij / n * log_ratio).sum())
    return float(min(max(mi, 0.0) / np.sqrt(h_a * h_b), 1.0))  # clamp rounding noise


def ami(a, b) -> float:
    """Adjusted mutual information (Vinh et al., 2010), normalised like :func:`nmi`
    (geometric mean of the entropies), so that random assignments score about 0.
    Computed by scikit-learn; degenerate cases follow its conventions."""
    from sklearn.metrics import adjusted_mutual_info_score

    return float(adjusted_mutual_info_score(*_pair(a, b, ("a", "b")), average_method="geometric"))


def ari(a, b) -> float:
    """Adjusted Rand index (Hubert and Arabie, 1985): 1 for identical partitions, about 0
    for random ones, may be negative. Computed by scikit-learn."""
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(*_pair(a, b, ("a", "b"))))


def purity(pred, labels) -> float:
    """``(1/N) sum over predicted clusters of the count of its most frequent label``.

    pred, labels: (N,) ids. 1.0 when every cluster holds one label; not symmetric
    (N singleton clusters have purity 1, so read it next to :func:`nmi`).
    """
    n_ij, rows, _, size_pred, _ = _joint(pred, labels, ("pred", "labels"))
    best = np.zeros(len(size_pred), dtype=np.int64)
    np.maximum.at(best, rows, n_ij)
    return float(best.sum() / n_ij.sum())


# ----------------------------------------------------------------------------- retrieval

def _scores(x, name: str) -> Tensor:
    x = torch.as_tensor(x).detach().cpu()
    if x.ndim != 2 or 0 in x.shape:
        raise ValueError(f"{name} must be a non-empty 2-D (Q, N) similarity matrix, got shape {tuple(x.shape)}")
    if not (x.is_floating_point() and x.dtype.itemsize >= 4):
        x = x.to(torch.float64)  # float16 / integer scores; large float32 matrices stay float32 here
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def _labels(y, n: int, name: str) -> Tensor:
    y = torch.as_tensor(y).detach().cpu()
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class indices, got {y.dtype}")
    if bool((y < 0).any()):
        raise ValueError(f"{name} contains negative labels (-1 = unlabelled): retrieval needs a label for every item")
    return y.long()


def _bool(x: Tensor, name: str) -> Tensor:
    if x.dtype == torch.bool:
        return x
    if x.is_floating_point() or x.is_complex() or not bool(((x == 0) | (x == 1)).all()):
        raise ValueError(f"{name} must be boolean (or 0/1), got {x.dtype}")
    return x.bool()


def _ranked_ap(scores: Tensor, rel: Tensor, trapezoid: bool) -> Tensor:
    """scores (m, N) float, rel (m, N) bool -> AP (m,) float64, NaN where a row has no relevant item."""
    by_rel = torch.sort(rel.to(torch.uint8), dim=1, stable=True).indices  # irrelevant first ...
    by_score = torch.sort(scores.gather(1, by_rel), dim=1, descending=True, stable=True).indices
    hit = rel.gather(1, by_rel.gather(1, by_score)).double()  # ... so they win ties: (m, N) ranked
    found = hit.cumsum(1)  # relevant items at ranks 1..r
    rank = torch.arange(1, scores.shape[1] + 1, dtype=torch.float64)
    precision = found / rank  # precision at rank r
    if trapezoid:  # mean of the precisions just before and at each hit (INRIA Holidays convention)
        before = torch.cat([torch.ones_like(found[:, :1]), (found[:, 1:] - 1) / rank[:-1]], dim=1)
        precision = (precision + before) / 2
    n_rel = hit.sum(1)
    return torch.where(n_rel > 0, (precision * hit).sum(1) / n_rel.clamp_min(1), torch.nan)


def average_precision(scores, relevant, trapezoid: bool = False) -> float:
    """Average precision of one ranked query: ``(1/R) sum over relevant items of the
    precision at their rank`` (ranks by decreasing score, pessimistic ties).

    scores: (N,) float; relevant: (N,) bool (or 0/1). ``trapezoid=True`` averages the
    precisions just before and at each hit instead (the Holidays / Copydays / revisited
    Oxford convention, thesis Tables 5.3 and 5.4). Returns NaN when nothing is relevant.
    """
    s, r = torch.as_tensor(scores), torch.as_tensor(relevant).detach().cpu()
    if s.ndim != 1 or r.shape != s.shape:
        raise ValueError(f"scores and relevant must be 1-D of one length, got {tuple(s.shape)} and {tuple(r.shape)}")
    return float(_ranked_ap(_scores(s.view(1, -1), "scores"), _bool(r, "relevant").view(1, -1), trapezoid)[0])


def _label_rows(sim, query_labels, db_labels, exclude_self: bool, chunk_size: int):
    """Yield ``(scores (m, N), relevant (m, N))`` row chunks; same class = relevant."""
    s = _scores(sim, "sim")
    q, n = s.shape
    ql, dl = _labels(query_labels, q, "query_labels"), _labels(db_labels, n, "db_labels")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if exclude_self and (q > n or not torch.equal(ql, dl[:q])):
        raise ValueError("exclude_self=True means query i is database item i, but "
                         + ("Q > N" if q > n else "query_labels differ from db_labels[:Q]"))
    for start in range(0, q, chunk_size):
        scores = s[start : start + chunk_size].to(torch.float64, copy=True)
        rel = ql[start : start + scores.shape[0], None] == dl[None, :]
        if exclude_self:  # the query itself: irrelevant and ranked last, so it changes nothing
            rows = torch.arange(scores.shape[0])
            rel[rows, rows + start] = False
            scores[rows, rows + start] = -torch.inf
        yield scores, rel


def _mean_present(aps: Tensor) -> float:
    aps = aps[~torch.isnan(aps)]
    return float(aps.mean()) if aps.numel() else float("nan")


def mean_average_precision(sim, query_labels, db_labels, exclude_self: bool = False,
                           trapezoid: bool = False, chunk_size: int = 128) -> float:
    """mAP of class-level retrieval: database items of the query's class are relevant.

    sim: (Q, N) similarities (higher = closer, e.g. cosine); query_labels (Q,),
    db_labels (N,) int64 class indices. ``exclude_self``: query i is database item i
    (as in ``sim = feats @ feats.T``) and is left out of its own ranking. Queries with no
    relevant item are skipped; NaN if all are. ``trapezoid`` as in
    :func:`average_precision`. Rows are ranked ``chunk_size`` at a time.
    """
    aps = [_ranked_ap(s, r, trapezoid) for s, r in _label_rows(sim, query_labels, db_labels, exclude_self, chunk_size)]
    return _mean_present(torch.cat(aps))


def recall_at_k(sim, query_labels, db_labels, ks: Sequence[int] = (1, 5, 10), exclude_self: bool = False,
                chunk_size: int = 128) -> dict[int, float]:
    """Recall@k of metric learning: the fraction of queries with at least one database
    item of their class among their ``k`` most similar (pessimistic ties).

    Arguments as :func:`mean_average_precision`. Queries with no relevant item are
    skipped (NaN if all are); ``k`` above N counts as N. Returns ``{k: recall}``.
    """
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be a non-empty list of integers >= 1, got {ks}")
    ranks = []
    for scores, rel in _label_rows(sim, query_labels, db_labels, exclude_self, chunk_size):
        best = scores.masked_fill(~rel, -torch.inf).amax(1, keepdim=True)  # best relevant score (m, 1)
        rank = (scores > best).sum(1) + ((scores == best) & ~rel).sum(1)  # 0-based rank of first hit
        ranks.append(rank[rel.any(1)])
    first = torch.cat(ranks)
    return {k: float((first < k).double().mean()) if first.numel() else float("nan") for k in ks}


def copy_detection_map(sim, positives, trapezoid: bool = True, chunk_size: int = 128) -> float:
    """mAP of copy detection (thesis 5.5.1, Table 5.4: Copydays "strong" plus distractors).

    sim: (Q, N) query-to-database similarities; positives: a (Q, N) bool array, or a
    list of Q collections of database indices (the originals each query copies).
    Queries without a positive are skipped. ``trapezoid=True`` (default) is the
    INRIA Holidays / Copydays AP convention; see :func:`average_precision`.
    """
    s = _scores(sim, "sim")
    q, n = s.shape
    if isinstance(positives, (list, tuple)):
        if len(positives) != q:
            raise ValueError(f"positives must hold one collection per query ({q}), got {len(positives)}")
        rel = torch.zeros(q, n, dtype=torch.bool)
        for i, pos in enumerate(positives):
            idx = torch.as_tensor(sorted(int(j) for j in pos), dtype=torch.long)
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
                raise ValueError(f"positives[{i}] has database indices outside [0, {n})")
            rel[i, idx] = True
    else:
        rel = _bool(torch.as_tensor(positives).detach().cpu(), "positives")
        if rel.shape != s.shape:
            raise ValueError(f"positives must have the shape of sim {tuple(s.shape)}, got {tuple(rel.shape)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    aps = [_ranked_ap(s[i : i + chunk_size].double(), rel[i : i + chunk_size], trapezoid)
           for i in range(0, q, chunk_size)]
    return _mean_present(torch.cat(aps))


# ----------------------------------------------------------------------------- attention

def attention_mass_mask(attn, mass: float = 0.6) -> Tensor:
    """Threshold an attention map to keep ``mass`` of its total (thesis 5.5.2, Fig. 5.5: 60%).

    attn: (H, W) or (heads, H, W) non-negative weights (e.g. the [CLS] attention of the
    last block); each head is thresholded on its own. Returns a bool mask of the same
    shape, ``attn >= t`` with the largest ``t`` whose kept pixels sum to at least
    ``mass * total``: the smallest set of highest-attention pixels reaching the mass,
    except that pixels tied with the last one kept are all kept (a threshold cannot
    split ties). ``mass=1`` keeps every non-zero pixel; an all-zero map gives an empty mask.
    """
    a = torch.as_tensor(attn).detach().cpu()
    if a.ndim not in (2, 3) or 0 in a.shape:
        raise ValueError(f"attn must be (H, W) or (heads, H, W), got shape {tuple(a.shape)}")
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    a = a.to(torch.float64)
    if not bool(torch.isfinite(a).all()) or bool((a < 0).any()):
        raise ValueError("attn must be finite and non-negative (attention weights)")
    flat = a.reshape(-1, a.shape[-2] * a.shape[-1])  # (heads, H*W); one row for an (H, W) map
    ranked = flat.sort(dim=1, descending=True).values  # (heads, H*W)
    kept = ranked.cumsum(1)
    need = mass * kept[:, -1:]  # total from the same summation order as the cumsum
    first = torch.searchsorted(kept, need).clamp_max(flat.shape[1] - 1)  # first rank reaching the mass
    threshold = ranked.gather(1, first)
    mask = (flat >= threshold) & (kept[:, -1:] > 0)
    return mask.reshape(a.shape)


def jaccard(mask_a, mask_b) -> float:
    """Jaccard similarity ``|A and B| / |A or B|`` of two boolean (or 0/1) masks of one
    shape, over all their elements. Two empty masks agree perfectly: 1.0."""
    a = _bool(torch.as_tensor(mask_a).detach().cpu(), "mask_a")
    b = _bool(torch.as_tensor(mask_b).detach().cpu(), "mask_b")
    if a.shape != b.shape:
        raise ValueError(f"mask_a and mask_b differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union
