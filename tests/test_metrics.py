"""Clustering, retrieval and attention metrics against hand-computed values and naive loops."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nolabel.metrics import (ami, ari, attention_mass_mask, average_precision, contingency,
                                      copy_detection_map, jaccard, mean_average_precision, nmi, purity,
                                      recall_at_k)


# ----------------------------------------------------------------------------- clustering

def naive_nmi(a, b):
    """I(A;B) / sqrt(H(A) H(B)) with loops over the cells of the joint distribution."""
    n = len(a)
    pa = {x: sum(1 for v in a if v == x) / n for x in set(a)}
    pb = {y: sum(1 for v in b if v == y) / n for y in set(b)}
    mi = 0.0
    for x in pa:
        for y in pb:
            pxy = sum(1 for u, v in zip(a, b) if u == x and v == y) / n
            if pxy > 0:
                mi += pxy * math.log(pxy / (pa[x] * pb[y]))
    h = lambda p: -sum(q * math.log(q) for q in p.values())  # noqa: E731
    return mi / math.sqrt(h(pa) * h(pb))


def test_nmi_two_by_two_by_hand():
    a = [0, 0, 0, 1]
    b = [0, 0, 1, 1]
    # contingency [[2, 1], [0, 1]], N = 4; p(A) = (3/4, 1/4), p(B) = (1/2, 1/2)
    # I = 2/4 ln((2/4) / (3/4 * 1/2)) + 1/4 ln((1/4) / (3/4 * 1/2)) + 1/4 ln((1/4) / (1/4 * 1/2))
    #   = 1/2 ln(4/3) + 1/4 ln(2/3) + 1/4 ln(2) = 0.21576155...
    # H(A) = -(3/4 ln 3/4 + 1/4 ln 1/4) = 0.56233514..., H(B) = ln 2
    mi = 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * math.log(2)
    h_a = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    expected = mi / math.sqrt(h_a * math.log(2))
    assert expected == pytest.approx(0.345592, abs=1e-6)
    assert nmi(a, b) == pytest.approx(expected, abs=1e-12)
    assert nmi(b, a) == pytest.approx(expected, abs=1e-12)  # symmetric
    assert contingency(a, b).tolist() == [[2, 1], [0, 1]]


def test_nmi_matches_naive_loops_and_sklearn():
    from sklearn.metrics import normalized_mutual_info_score

    g = np.random.default_rng(0)
    for _ in range(5):
        a, b = g.integers(0, 4, 60), g.integers(0, 6, 60)
        assert nmi(a, b) == pytest.approx(naive_nmi(a.tolist(), b.tolist()), abs=1e-12)
        assert nmi(a, b) == pytest.approx(normalized_mutual_info_score(a, b, average_method="geometric"), abs=1e-12)


def test_nmi_properties():
    a = torch.tensor([0, 0, 1, 1, 2, 2])
    assert nmi(a, torch.tensor([7, 7, 3, 3, 9, 9])) == pytest.approx(1.0)  # relabelling: same partition
    assert nmi([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0, abs=1e-15)  # independent
    # B is a function of A (not the reverse): I = H(B) = ln 2, H(A) = ln 4 -> ln 2 / sqrt(ln 4 ln 2) = sqrt(1/2)
    assert nmi(np.array([0, 1, 2, 3]), [0, 0, 1, 1]) == pytest.approx(math.sqrt(0.5))


def test_nmi_single_cluster():
    assert nmi([0, 0, 0, 0], [0, 1, 0, 1]) == 0.0  # a collapsed clustering carries no information
    assert nmi([0, 1, 2, 3], [5, 5, 5, 5]) == 0.0
    assert nmi([3, 3, 3], [1, 1, 1]) == 1.0  # two single-cluster partitions are identical
    assert nmi([4], [2]) == 1.0


def test_contingency_and_purity_by_hand():
    pred = [0, 0, 0, 1, 1, 2]
    labels = [0, 0, 1, 1, 1, 2]
    assert contingency(pred, labels).tolist() == [[2, 1, 0], [0, 2, 0], [0, 0, 1]]
    assert contingency([5, 1, 5], [2, 2, 8]).tolist() == [[1, 0], [1, 1]]  # rows 1, 5; columns 2, 8
    assert purity(pred, labels) == pytest.approx(5 / 6)  # majorities 2 + 2 + 1 of 6
    assert purity([0] * 5, [0, 0, 0, 1, 1]) == pytest.approx(3 / 5)  # one cluster: majority share
    assert purity(list(range(5)), [0, 0, 0, 1, 1]) == 1.0  # singletons are pure
    assert contingency([1, 1], [0, 0]).tolist() == [[2]]


def test_ari_and_ami():
    # ARI by hand: cells (2, 1, 1) -> sum C(n_ij, 2) = 1; rows (2, 2) -> 2; columns (2, 1, 1) -> 1;
    # expected index 2 * 1 / C(4, 2) = 1/3; ARI = (1 - 1/3) / ((2 + 1) / 2 - 1/3) = 4/7
    assert ari([0, 0, 1, 1], [0, 0, 1, 2]) == pytest.approx(4 / 7)
    assert ari([0, 0, 1, 1], [1, 1, 0, 0]) == pytest.approx(1.0)
    assert ami([0, 0, 1, 1, 2, 2], [2, 2, 0, 0, 1, 1]) == pytest.approx(1.0)
    from sklearn.metrics import adjusted_mutual_info_score

    a, b = [0, 0, 1, 1, 1, 2, 2, 0], [1, 0, 1, 1, 2, 2, 2, 0]
    assert ami(a, b) == pytest.approx(adjusted_mutual_info_score(a, b, average_method="geometric"))
    assert ami(a, b) < nmi(a, b)  # the chance correction lowers it


@pytest.mark.parametrize("fn", [nmi, ami, ari, purity, contingency])
def test_clustering_validation(fn):
    with pytest.raises(ValueError, match="differ in length"):
        fn([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="empty"):
        fn([], [])
    with pytest.raises(ValueError, match="integer"):
        fn(torch.tensor([0.0, 1.0]), [0, 1])
    with pytest.raises(ValueError, match="1-D"):
        fn(np.zeros((2, 2), dtype=int), [0, 1])


# ----------------------------------------------------------------------------- retrieval

def naive_ap(scores, relevant, trapezoid=False):
    """Sort by (-score, relevant): at equal scores irrelevant items come first; then average
    the precisions at the hits (or the trapezoid of the precisions before and at each hit)."""
    ranked = [rel for _, rel in sorted(zip(scores, relevant), key=lambda p: (-p[0], p[1]))]
    total = sum(ranked)
    if total == 0:
        return float("nan")
    ap, found = 0.0, 0
    for pos, rel in enumerate(ranked):
        if rel:
            before = 1.0 if pos == 0 else found / pos
            found += 1
            at = found / (pos + 1)
            ap += (before + at) / 2 if trapezoid else at
    return ap / total


def test_average_precision_by_hand():
    scores = [0.9, 0.8, 0.1, 0.7, 0.5]
    relevant = [True, False, True, False, True]
    # ranking: items 0 (hit), 1, 3, 4 (hit), 2 (hit) -> hits at ranks 1, 4, 5
    assert average_precision(scores, relevant) == pytest.approx((1 / 1 + 2 / 4 + 3 / 5) / 3)
    # trapezoid: hit 1: (1 + 1/1) / 2; hit 2: (1/3 + 2/4) / 2; hit 3: (2/4 + 3/5) / 2
    expected = (1.0 + (1 / 3 + 2 / 4) / 2 + (2 / 4 + 3 / 5) / 2) / 3
    assert average_precision(scores, relevant, trapezoid=True) == pytest.approx(expected)
    assert average_precision(torch.tensor(scores), torch.tensor([1, 0, 1, 0, 1])) == pytest.approx(0.7)


def test_average_precision_edges():
    assert average_precision([0.3, 0.1, 0.9], [1, 1, 1]) == 1.0  # all relevant
    assert average_precision([0.3, 0.1, 0.9], [1, 1, 1], trapezoid=True) == 1.0
    assert math.isnan(average_precision([0.3, 0.1], [0, 0]))  # nothing relevant
    assert average_precision([0.5], [1]) == 1.0
    # ties are pessimistic: equal scores put the relevant item after the irrelevant ones
    assert average_precision([1.0, 1.0, 1.0], [0, 1, 0]) == pytest.approx(1 / 3)
    assert average_precision([2.0, 1.0, 1.0], [0, 1, 0]) == pytest.approx(1 / 3)
    assert average_precision([2.0, 1.0, 1.0], [1, 0, 1]) == pytest.approx((1 + 2 / 3) / 2)


def test_average_precision_matches_naive_with_ties():
    g = np.random.default_rng(1)
    for trapezoid in (False, True):
        for _ in range(20):
            scores = g.integers(0, 4, 15).astype(float)  # many ties
            relevant = g.random(15) < 0.4
            expected = naive_ap(scores.tolist(), relevant.tolist(), trapezoid)
            got = average_precision(scores, relevant, trapezoid=trapezoid)
            assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)


def retrieval_case():
    sim = torch.tensor([[0.9, 0.8, 0.1, 0.7, 0.5],
                        [0.1, 0.2, 0.3, 0.4, 0.5]])
    return sim, torch.tensor([0, 1]), torch.tensor([0, 1, 0, 1, 0])


def test_map_and_recall_by_hand():
    sim, ql, dl = retrieval_case()
    # query 0 (class 0): hits at ranks 1, 4, 5 -> AP 0.7; query 1 (class 1): ranking 4, 3, 2, 1, 0,
    # hits (items 3 and 1) at ranks 2 and 4 -> AP (1/2 + 2/4) / 2 = 0.5
    assert mean_average_precision(sim, ql, dl) == pytest.approx(0.6)
    assert mean_average_precision(sim, ql, dl, chunk_size=1) == pytest.approx(0.6)
    # first hits at rank 1 (query 0) and rank 2 (query 1)
    assert recall_at_k(sim, ql, dl, ks=(1, 2, 5, 100)) == {1: 0.5, 2: 1.0, 5: 1.0, 100: 1.0}


def test_map_skips_queries_without_relevant_items():
    sim, _, dl = retrieval_case()
    # query 1 asks for class 2, absent from the database: skipped, not counted as 0
    assert mean_average_precision(sim, torch.tensor([0, 2]), dl) == pytest.approx(0.7)
    assert recall_at_k(sim, torch.tensor([0, 2]), dl, ks=(1,)) == {1: 1.0}
    assert math.isnan(mean_average_precision(sim, torch.tensor([2, 3]), dl))
    assert math.isnan(recall_at_k(sim, torch.tensor([2, 3]), dl, ks=(1,))[1])
    assert mean_average_precision(sim, torch.tensor([0, 0]), torch.zeros(5, dtype=torch.long)) == 1.0  # all relevant


def test_exclude_self_matches_naive():
    g = torch.Generator().manual_seed(0)
    feats = torch.nn.functional.normalize(torch.randn(12, 4, generator=g), dim=1)
    labels = torch.randint(0, 3, (12,), generator=g)
    sim = feats @ feats.T  # query i is database item i
    aps, firsts = [], []
    for i in range(12):
        keep = [j for j in range(12) if j != i]
        rel = [bool(labels[j] == labels[i]) for j in keep]
        aps.append(naive_ap(sim[i, keep].tolist(), rel))
        ranked = [r for _, r in sorted(zip(sim[i, keep].tolist(), rel), key=lambda p: (-p[0], p[1]))]
        firsts.append(ranked.index(True) if any(ranked) else None)
    present = [a for a in aps if not math.isnan(a)]
    assert mean_average_precision(sim, labels, labels, exclude_self=True) == pytest.approx(sum(present) / len(present))
    got = recall_at_k(sim, labels, labels, ks=(1, 3), exclude_self=True)
    hits = [f for f in firsts if f is not None]
    assert got == {k: pytest.approx(sum(f < k for f in hits) / len(hits)) for k in (1, 3)}
    # without exclusion every query finds itself first
    assert recall_at_k(sim, labels, labels, ks=(1,))[1] == 1.0
    with pytest.raises(ValueError, match="exclude_self"):
        mean_average_precision(sim[:3], labels[[1, 0, 2]], labels, exclude_self=True)


def test_copy_detection_by_hand():
    sim = torch.tensor([[0.1, 0.9, 0.3, 0.2],
                        [0.5, 0.4, 0.3, 0.2],
                        [0.5, 0.4, 0.3, 0.2]])
    positives = [{1}, {2, 3}, set()]  # query 2 has no original: skipped
    # query 0: its original ranks first -> AP 1. query 1: hits at ranks 3 and 4;
    # step AP (1/3 + 2/4) / 2 = 5/12; trapezoid ((0/2 + 1/3) / 2 + (1/3 + 2/4) / 2) / 2 = 7/24
    assert copy_detection_map(sim, positives, trapezoid=False) == pytest.approx((1 + 5 / 12) / 2)
    assert copy_detection_map(sim, positives) == pytest.approx((1 + 7 / 24) / 2)
    dense = torch.zeros(3, 4, dtype=torch.bool)
    dense[0, 1] = dense[1, 2] = dense[1, 3] = True
    assert copy_detection_map(sim, dense) == copy_detection_map(sim, positives)
    assert copy_detection_map(sim, dense.numpy(), chunk_size=1) == copy_detection_map(sim, positives)
    assert math.isnan(copy_detection_map(sim, [set(), set(), set()]))


@pytest.mark.parametrize("call,match", [
    (lambda: mean_average_precision(torch.zeros(2, 0), [0, 1], []), "non-empty 2-D"),
    (lambda: mean_average_precision(torch.tensor([[float("nan")]]), [0], [0]), "NaN"),
    (lambda: mean_average_precision(torch.zeros(2, 3), [0], [0, 1, 2]), "query_labels"),
    (lambda: mean_average_precision(torch.zeros(2, 3), [0, 1], [0, -1, 2]), "db_labels"),
    (lambda: recall_at_k(torch.zeros(2, 3), [0, 1], [0, 1, 2], ks=(0,)), "ks"),
    (lambda: recall_at_k(torch.zeros(2, 3), [0, 1], [0, 1, 2], chunk_size=0), "chunk_size"),
    (lambda: average_precision([0.1, 0.2], [1]), "1-D of one length"),
    (lambda: average_precision([0.1, 0.2], [2, 0]), "relevant"),
    (lambda: copy_detection_map(torch.zeros(2, 3), [{0}]), "one collection per query"),
    (lambda: copy_detection_map(torch.zeros(2, 3), [{0}, {3}]), r"positives\[1\]"),
    (lambda: copy_detection_map(torch.zeros(2, 3), torch.zeros(2, 4, dtype=torch.bool)), "shape of sim"),
])
def test_retrieval_validation(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ----------------------------------------------------------------------------- attention

def naive_mass_mask(attn, mass):
    """Try thresholds from the largest value down; keep the first whose mask holds the mass."""
    flat = attn.flatten().tolist()
    total = sum(flat)
    if total == 0:
        return torch.zeros_like(attn, dtype=torch.bool)
    for t in sorted(set(flat), reverse=True):
        if sum(v for v in flat if v >= t) >= mass * total:
            return attn >= t
    raise AssertionError("unreachable")


def test_mass_mask_by_hand():
    attn = torch.tensor([[4.0, 3.0], [2.0, 1.0]])  # total 10, 60% = 6: 4 alone is short, 4 + 3 = 7 reaches it
    assert attention_mass_mask(attn).tolist() == [[True, True], [False, False]]
    assert attention_mass_mask(attn, mass=0.4).tolist() == [[True, False], [False, False]]  # 4 >= 4
    assert attention_mass_mask(attn, mass=0.75).tolist() == [[True, True], [True, False]]  # 9 >= 7.5
    exact = torch.tensor([[3.0, 2.0], [3.0, 2.0]])  # 3 + 3 = 6 reaches 60% exactly: no 2 is needed
    assert attention_mass_mask(exact).tolist() == [[True, False], [True, False]]


def test_mass_mask_ties_are_kept_together():
    attn = torch.tensor([[0.3, 0.3], [0.4, 0.0]])
    # 0.4 alone < 0.6; adding one 0.3 reaches 0.7, and its tie (the other 0.3) is kept as well
    assert attention_mass_mask(attn).tolist() == [[True, True], [True, False]]
    flat = torch.full((3, 3), 1.0)  # every pixel ties: a threshold keeps all of them
    assert attention_mass_mask(flat).all()
    # the mask does not depend on pixel order
    assert torch.equal(attention_mass_mask(attn.flip(0).T), attention_mass_mask(attn).flip(0).T)


def test_mass_mask_heads_edges_and_naive():
    attn = torch.stack([torch.tensor([[4.0, 3.0], [2.0, 1.0]]), torch.tensor([[1.0, 0.0], [0.0, 9.0]])])
    mask = attention_mass_mask(attn)  # (heads, H, W): each head on its own
    assert mask.shape == (2, 2, 2) and mask.dtype == torch.bool
    assert mask[0].tolist() == [[True, True], [False, False]] and mask[1].tolist() == [[False, False], [False, True]]
    assert attention_mass_mask(torch.tensor([[0.0, 2.0], [1.0, 0.0]]), mass=1.0).tolist() == [[False, True],
                                                                                             [True, False]]
    assert not attention_mass_mask(torch.zeros(3, 3)).any()  # no attention at all: empty mask
    g = torch.Generator().manual_seed(0)
    for mass in (0.1, 0.6, 0.9, 1.0):
        maps = torch.randint(0, 5, (6, 4, 5), generator=g).double()
        for m, got in zip(maps, attention_mass_mask(maps, mass)):
            assert torch.equal(got, naive_mass_mask(m, mass))


@pytest.mark.parametrize("attn,mass,match", [
    (torch.ones(4), 0.6, "shape"),
    (torch.ones(2, 2), 0.0, "mass"),
    (torch.ones(2, 2), 1.5, "mass"),
    (torch.tensor([[1.0, -0.1]]), 0.6, "non-negative"),
])
def test_mass_mask_validation(attn, mass, match):
    with pytest.raises(ValueError, match=match):
        attention_mass_mask(attn, mass)


def test_jaccard_by_hand():
    a = torch.tensor([[1, 1, 0], [0, 0, 0]], dtype=torch.bool)
    b = torch.tensor([[0, 1, 1], [0, 0, 0]], dtype=torch.bool)
    assert jaccard(a, b) == pytest.approx(1 / 3)  # intersection 1 pixel, union 3
    assert jaccard(a, a) == 1.0
    assert jaccard(a, ~a) == 0.0
    assert jaccard(torch.zeros(2, 2, dtype=torch.bool), torch.zeros(2, 2, dtype=torch.bool)) == 1.0  # both empty
    assert jaccard(torch.zeros(2, 3, dtype=torch.bool), a) == 0.0  # one empty
    assert jaccard(np.array([[1, 0], [1, 1]]), torch.tensor([[1, 1], [0, 1]])) == pytest.approx(2 / 4)
    with pytest.raises(ValueError, match="differ in shape"):
        jaccard(a, a.T)
    with pytest.raises(ValueError, match="mask_b"):
        jaccard(a, torch.full((2, 3), 0.5))
