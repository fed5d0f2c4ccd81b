import numpy as np
import pytest
import torch

from nolabel.ops.pic import (argmax_edge_clusters, knn_graph, pic, pic_weights, power_iteration,
                             symmetric_edges)


def groups(n_groups, n_per, spread=0.01, seed=0):
    """Tight random groups far apart (centres 1 apart or more, sigma 0.2 scale)."""
    rng = np.random.default_rng(seed)
    centres = np.eye(max(n_groups, 3))[:n_groups] * 2.0
    labels = np.repeat(np.arange(n_groups), n_per)
    x = centres[labels] + spread * rng.standard_normal((len(labels), centres.shape[1]))
    return x.astype(np.float32), labels


def dense_graph(x, n_neighbors, sigma):
    """G from the definition: brute-force distances, each row's n_neighbors nearest others."""
    n = len(x)
    sq = ((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1)
    g = np.zeros((n, n))
    for i in range(n):
        others = [j for j in np.argsort(sq[i], kind="stable") if j != i][:n_neighbors]
        for j in others:
            g[i, j] = np.exp(-sq[i, j] / sigma**2)
    return g


def naive_power_iteration(g, alpha, n_iters):
    n = len(g)
    v = np.full(n, 1.0 / n)
    for _ in range(n_iters):
        v = alpha * (g + g.T) @ v + (1 - alpha) * v
        v = v / np.abs(v).sum()
    return v


def naive_clusters(g, v):
    """Step 3 with loops: i -> argmax_j W_ij (v_j - v_i) over neighbours of W = G + G^T when
    positive; union-find for the components; clusters numbered by their smallest member."""
    w = g + g.T
    n = len(v)
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(n):
        best, best_j = 0.0, None
        for j in range(n):
            if w[i, j] > 0 and w[i, j] * (v[j] - v[i]) > best:
                best, best_j = w[i, j] * (v[j] - v[i]), j
        if best_j is not None:
            parent[find(i)] = find(best_j)
    roots, labels = {}, []
    for i in range(n):
        labels.append(roots.setdefault(find(i), len(roots)))
    return np.array(labels)


def test_two_far_apart_tight_groups_give_two_clusters():
    x, labels = groups(2, 6)                                               # 5-NN graph: two cliques
    result = pic(torch.from_numpy(x))
    assert result.n_clusters == 2
    assert np.array_equal(result.assignments.numpy(), labels)


def test_clusters_never_cross_disconnected_groups():
    x, labels = groups(4, 30, spread=0.05, seed=1)
    result = pic(x)
    a = result.assignments.numpy()
    assert result.n_clusters >= 4 and a.min() == 0 and a.max() == result.n_clusters - 1
    for c in range(result.n_clusters):
        assert len(set(labels[a == c].tolist())) == 1


def test_knn_graph_matches_brute_force_and_excludes_self():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((30, 4)).astype(np.float32)
    neighbors, sq = knn_graph(x, 5)
    g = dense_graph(x, 5, sigma=0.2)
    for i in range(30):
        assert set(neighbors[i].tolist()) == set(np.flatnonzero(g[i]).tolist())
        assert i not in neighbors[i]
    assert np.allclose(sq, ((x[:, None] - x[neighbors]) ** 2).sum(-1), atol=1e-4)
    dup = np.repeat(x[:4], 3, axis=0)                                     # duplicates: self still removed
    neighbors, _ = knn_graph(dup, 5)
    assert not (neighbors == np.arange(12)[:, None]).any()


@pytest.mark.parametrize("alpha,n_iters", [(1e-3, 200), (0.2, 30)])
def test_power_iteration_matches_dense_matrix(alpha, n_iters):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((25, 3)).astype(np.float32) * 0.15
    neighbors, sq = knn_graph(x, 5)
    src, dst, w = symmetric_edges(neighbors, pic_weights(sq, 0.2))
    v = power_iteration(src, dst, w, 25, alpha, n_iters)
    want = naive_power_iteration(dense_graph(x, 5, 0.2), alpha, n_iters)
    assert np.allclose(v, want, rtol=1e-5, atol=1e-12)
    assert v.sum() == pytest.approx(1.0)


def test_symmetric_edges_sum_both_directions():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((20, 3)).astype(np.float32) * 0.2
    neighbors, sq = knn_graph(x, 5)
    src, dst, w = symmetric_edges(neighbors, pic_weights(sq, 0.2))
    g = dense_graph(x, 5, 0.2)
    dense = np.zeros((20, 20))
    dense[src, dst] = w
    assert np.allclose(dense, g + g.T, rtol=1e-5)


@pytest.mark.parametrize("seed,alpha,n_iters", [(5, 0.1, 20), (7, 0.1, 20), (5, 1e-3, 200)])
def test_argmax_edge_clusters_match_naive_loops(seed, alpha, n_iters):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((40, 3)).astype(np.float32) * 0.5
    result = pic(x, alpha=alpha, n_iters=n_iters)
    g = dense_graph(x, 5, 0.2)
    v = naive_power_iteration(g, alpha, n_iters)
    assert np.array_equal(result.assignments.numpy(), naive_clusters(g, v))
    # one local maximum of v per cluster
    neighbors, sq = knn_graph(x, 5)
    src, dst, w = symmetric_edges(neighbors, pic_weights(sq, 0.2))
    labels, n_clusters = argmax_edge_clusters(src, dst, w, v)
    is_max = np.array([all(v[j] <= v[i] for j in dst[src == i]) for i in range(40)])
    assert 1 < n_clusters == result.n_clusters == is_max.sum()
    assert sorted(labels[is_max].tolist()) == list(range(n_clusters))


def test_small_inputs():
    assert pic(np.zeros((1, 3), dtype=np.float32)).n_clusters == 1
    result = pic(np.array([[0, 0], [0.01, 0], [0, 0.02]], dtype=np.float32))  # 2 neighbours only
    assert result.assignments.shape == (3,) and 1 <= result.n_clusters <= 3


def test_errors():
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        pic(np.zeros((0, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="sigma > 0"):
        pic(np.zeros((4, 3), dtype=np.float32), sigma=0.0)
    with pytest.raises(ValueError, match="NaN"):
        pic(np.array([[0.0, np.inf], [1.0, 1.0]], dtype=np.float32))
