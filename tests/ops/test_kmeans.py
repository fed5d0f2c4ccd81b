import numpy as np
import pytest
import torch

from nolabel.ops.kmeans import kmeans


def blobs(n_per=50, n_blobs=4, d=8, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_blobs, d)) * 3
    labels = np.repeat(np.arange(n_blobs), n_per)
    x = centers[labels] + spread * rng.standard_normal((len(labels), d))
    perm = rng.permutation(len(labels))
    return x[perm].astype(np.float32), labels[perm], centers


def same_partition(a, b):
    """True when the labelings a and b (N,) define the same partition."""
    pairs = set(zip(np.asarray(a).tolist(), np.asarray(b).tolist()))
    return len(pairs) == len(set(np.asarray(a).tolist())) == len(set(np.asarray(b).tolist()))


def naive_lloyd(x, centroids, n_iters):
    """Lloyd from the formula: dense float64 distances by broadcasting, argmin, means."""
    x, c = x.astype(np.float64), centroids.astype(np.float64).copy()
    for _ in range(n_iters):
        dist = ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)             # (N, k)
        labels = dist.argmin(1)
        for j in range(len(c)):
            members = x[labels == j]
            assert len(members) > 0, "naive reference hit an empty cluster"
            c[j] = members.mean(0)
    return labels, c


def test_recovers_well_separated_blobs_from_one_point_per_blob():
    x, labels, centers = blobs()
    init = np.stack([x[np.flatnonzero(labels == b)[0]] for b in range(4)])
    result = kmeans(x, 4, init=init)
    assert torch.equal(result.assignments, torch.from_numpy(labels))
    assert np.allclose(result.centroids.numpy(), centers, atol=0.05)
    assert result.n_empty_fixed == 0


def test_best_of_random_restarts_recovers_blobs():
    x, labels, _ = blobs(seed=1)
    runs = [kmeans(x, 4, seed=s) for s in range(10)]
    best = min(runs, key=lambda r: float(r.distances.sum()))
    assert same_partition(best.assignments.numpy(), labels)


@pytest.mark.parametrize("n_iters", [1, 5])
def test_matches_naive_lloyd(n_iters):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((300, 5)).astype(np.float32)
    init = x[rng.choice(300, 7, replace=False)]
    result = kmeans(torch.from_numpy(x), 7, n_iters=n_iters, init=init)
    want_labels, want_centroids = naive_lloyd(x, init, n_iters)
    assert result.n_iters == n_iters
    assert np.array_equal(result.assignments.numpy(), want_labels)
    assert np.allclose(result.centroids.numpy(), want_centroids, atol=1e-5)


def test_result_is_consistent_centroids_are_means_and_distances_squared_l2():
    x, _, _ = blobs(n_blobs=5, spread=1.0, seed=3)
    result = kmeans(x, 9, seed=4)
    a, c = result.assignments.numpy(), result.centroids.numpy()
    assert result.centroids.shape == (9, 8) and result.assignments.dtype == torch.int64
    for j in range(9):
        assert np.allclose(c[j], x[a == j].mean(0), atol=1e-5)
    assert np.allclose(result.distances.numpy(), ((x - c[a]) ** 2).sum(1), rtol=1e-5, atol=1e-6)


def test_stops_early_when_assignments_no_longer_change():
    x, labels, _ = blobs()
    init = np.stack([x[np.flatnonzero(labels == b)[0]] for b in range(4)])
    assert kmeans(x, 4, n_iters=50, init=init).n_iters <= 3


def test_duplicate_points_with_more_clusters_than_distinct_points_leave_none_empty():
    rng = np.random.default_rng(5)
    distinct = rng.standard_normal((3, 4)).astype(np.float32)
    x = distinct[rng.permutation(np.repeat(np.arange(3), 10))]            # 30 points, 3 distinct
    result = kmeans(x, 5, n_iters=6, seed=0)
    sizes = np.bincount(result.assignments.numpy(), minlength=5)
    assert (sizes > 0).all() and sizes.sum() == 30
    assert result.n_empty_fixed >= 2
    assert np.allclose(result.distances.numpy(), 0.0)                     # every centroid is one of the points
    for row in result.centroids.numpy():
        assert np.isclose(np.abs(distinct - row).sum(1), 0.0, atol=1e-6).any()


def test_as_many_clusters_as_identical_points():
    result = kmeans(np.ones((6, 3), dtype=np.float32), 6, n_iters=3)
    assert np.array_equal(np.sort(result.assignments.numpy()), np.arange(6))


def test_collapsed_features_are_split_into_halves_not_peeled_one_point_at_a_time():
    result = kmeans(np.zeros((2000, 4), dtype=np.float32), 100, n_iters=2, seed=1)
    sizes = np.bincount(result.assignments.numpy(), minlength=100)
    assert (sizes > 0).all() and sizes.max() <= 100                        # 20 on average
    assert result.n_empty_fixed == 2 * 99                                 # every iteration starts collapsed


def test_far_away_initial_centroid_is_reseeded_by_splitting_a_cluster():
    x, labels, _ = blobs(n_blobs=2, seed=6)
    init = np.stack([x[labels == 0][0], x[labels == 1][0], np.full(8, 1e3, dtype=np.float32)])
    result = kmeans(x, 3, n_iters=1, init=init)                            # one step: the fix itself
    sizes = np.bincount(result.assignments.numpy(), minlength=3)
    assert result.n_empty_fixed == 1 and (sizes > 0).all()
    assert np.abs(result.centroids.numpy()).max() < 100                    # the far centroid moved into the data
    # the split cluster's two halves are separated by a hyperplane: both are proper subsets of one blob
    moved_blob = labels[result.assignments.numpy() == 2]
    assert len(set(moved_blob.tolist())) == 1


def test_deterministic_by_seed():
    x, _, _ = blobs(spread=1.0, seed=7)
    a, b = kmeans(x, 6, seed=11), kmeans(x.copy(), 6, seed=11)
    assert torch.equal(a.centroids, b.centroids) and torch.equal(a.assignments, b.assignments)
    c = kmeans(x, 6, seed=12)
    assert not torch.equal(a.centroids, c.centroids)


def test_one_cluster_and_one_point_per_cluster():
    x, _, _ = blobs(n_per=5)
    one = kmeans(x, 1)
    assert torch.equal(one.assignments, torch.zeros(20, dtype=torch.int64))
    assert np.allclose(one.centroids.numpy()[0], x.mean(0), atol=1e-5)
    each = kmeans(x, 20)
    assert np.array_equal(np.sort(each.assignments.numpy()), np.arange(20))
    assert np.allclose(each.distances.numpy(), 0.0)


def test_errors():
    x = np.zeros((4, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="k=5 non-empty clusters from 4 points"):
        kmeans(x, 5)
    with pytest.raises(ValueError, match="k >= 1"):
        kmeans(x, 0)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        kmeans(np.zeros(4, dtype=np.float32), 2)
    with pytest.raises(ValueError, match="NaN"):
        kmeans(np.array([[0.0, np.nan], [1.0, 1.0]], dtype=np.float32), 1)
    with pytest.raises(ValueError, match="init must have shape"):
        kmeans(x, 2, init=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="process group"):
        kmeans(x, 2, group=object())


def test_cluster_sums_are_exact_so_any_split_of_the_rows_gives_the_same_centroids():
    from nolabel.ops.kmeans import _grid, _sums
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((5000, 8)) * 10.0 ** rng.uniform(-6, 3, (5000, 1))).astype(np.float32)
    labels = rng.integers(7, size=5000)
    unit = _grid(x, len(x), None)
    whole = _sums(x, labels, 7, unit)
    for split in (1, 1234, 4999):
        parts = _sums(x[:split], labels[:split], 7, unit) + _sums(x[split:], labels[split:], 7, unit)
        assert np.array_equal(parts, whole)                     # integers: every order, one total
    # ... where float64 sums of the same two shards differ in their last bits (the old rule)
    naive = np.zeros((7, 8)), np.zeros((7, 8))
    np.add.at(naive[0], labels, x.astype(np.float64))
    np.add.at(naive[1], labels[:1234], x[:1234].astype(np.float64))
    rest = np.zeros((7, 8))
    np.add.at(rest, labels[1234:], x[1234:].astype(np.float64))
    assert not np.array_equal(naive[1] + rest, naive[0])
    # and they are the float64 sums to far better than float32's precision
    np.testing.assert_allclose(whole * unit, naive[0], rtol=0, atol=1e-9 * np.abs(x).max())
    # the grid holds N_total values of the largest magnitude without overflow
    big = np.full((3, 2), np.float32(3e38))
    assert (_sums(big, np.zeros(3, dtype=np.int64), 1, _grid(big, 3, None)) > 0).all()


def test_assignment_of_a_row_does_not_depend_on_the_rows_searched_with_it():
    import faiss

    from nolabel.ops.kmeans import _assign
    rng = np.random.default_rng(1)
    centroids = rng.standard_normal((100, 32)).astype(np.float32)
    pairs = rng.integers(100, size=(6000, 2))
    # points (almost) halfway between two centroids: the distances' last bits decide
    x = ((centroids[pairs[:, 0]] + centroids[pairs[:, 1]]) / 2 + 1e-7 * rng.standard_normal((6000, 32)))
    x = x.astype(np.float32)
    whole = _assign(x, centroids)
    assert np.array_equal(np.concatenate([_assign(x[:2500], centroids), _assign(x[2500:], centroids)]), whole)
    assert faiss.cvar.distance_compute_blas_threshold < 2**31 - 1          # restored for other callers
    # faiss' default BLAS search gave 2,156 of these 6,000 rows another centroid when split so
    # (2026-12-03, AMD EPYC, faiss-cpu 1.15.1), which is why the assignment keeps off BLAS
