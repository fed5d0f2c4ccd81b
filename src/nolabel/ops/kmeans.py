"""k-means for pseudo-labels: faiss assignments, re-seeded empty clusters, distributed updates.

Thesis section 3.2.1 (DeepCluster, Eq. 3.2) and 3.3.1 (DeeperCluster's distributed
k-means). Lloyd's algorithm, each iteration:

1. assignment: every point goes to its nearest centroid in squared Euclidean distance,
   found by an exact faiss ``IndexFlatL2``. Eq. 3.2 is an L2 problem; an inner-product
   index would agree only if the centroids were unit vectors too, and means of unit
   vectors are not, so L2 is used for normalised and raw features alike. faiss computes
   each point's distances on its own (its SIMD loop), not through a matrix product: BLAS
   gives a row's distances different last bits depending on where the row falls in its
   batch (2.9% of 50,000 rows when the batch was split in two), which moved points on
   cluster boundaries between one process and two; the loop is batch-invariant and, on
   50,000 x 128 rows, 4x faster at K = 100 and 1.4x slower at K = 3000;
2. empty clusters are re-seeded (below);
3. update: each centroid becomes the mean of its points, from per-cluster sums and counts.
It stops early once an iteration changes no assignment and fixes no empty cluster.

Distributed (thesis 3.3.1). Each process passes its own shard of the features; the
global data is the concatenation of the shards in rank order. Processes exchange only
the shard sizes and rank 0's seed (once), the (k, D) initial centroids (once), and per
iteration the per-cluster sums (k, D) and counts (k,) plus the number of changed
assignments, and small per-split statistics when clusters are empty. Every random draw
comes from one numpy generator seeded with rank 0's seed and fed only with global
quantities, so all processes hold the same centroids and take the same empty-cluster
decisions, and the result equals one process run on the concatenated data (up to exact
distance ties). The per-cluster sums are exact, so they do not depend on how the rows are
split: every coordinate is rounded once to a fixed-point grid (a power of two, ``2**-bits``
of the largest magnitude over all processes, ``bits`` chosen so that N_total of them fit
in an int64: 46 bits for 50,000 rows, far finer than float32's 24) and summed as integers,
which add in any order to the same total (float64 sums of the shards, added in another
order than one process adds them, could differ in their last bits). With the batch-invariant
search of step 1, the 50,000 CIFAR-10 labels of two processes equal one process's
(BENCHMARKS.md, issue 14; 99.41% before). Without a process group every collective is a
no-op, so the same call runs in a plain process.

Initialisation: k distinct global row indices drawn uniformly from ``range(N_total)``
(``numpy.random.Generator.choice`` seeded by ``seed``); each process contributes the
rows it holds and a sum all-reduce assembles them. Alternatively ``init`` (k, D): rank
0's tensor is used on every process.

Empty clusters (thesis 3.2.1): "when a cluster becomes empty, we randomly select a
non-empty cluster and use its centroid with a small random perturbation as the new
centroid for the empty cluster. We then reassign the points belonging to the non-empty
cluster to the two resulting clusters." For the pair ``mu + eps u`` / ``mu - eps u``
(mu the mean of the chosen cluster's points, u a random direction) a point is nearer to
``mu + eps u`` exactly when ``<x - mu, u> > 0``, whatever eps; so the chosen cluster's
points with a positive projection move to the empty cluster and both centroids become
the means of their halves. The chosen cluster is drawn with probability proportional to
``size - 1``: large clusters are split first and singletons never. When the projection
does not split it (all its points coincide, e.g. duplicated images or a collapsed
network) a pseudo-random half moves, chosen by a hash of the points' global indices,
and should that leave a side empty, its point with the largest global index moves
alone. Each round fixes several empty clusters from distinct chosen clusters; rounds
repeat until none is empty, so with ``k <= N`` no cluster is ever returned empty.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import faiss
import numpy as np
import torch
import torch.distributed as torch_dist

from nolabel.ops.dist import is_dist

__all__ = ["KMeansResult", "kmeans"]

_CHUNK = 65536  # rows per chunk in the sums and distances
_NO_BLAS = 2**31 - 1   # faiss.cvar.distance_compute_blas_threshold that keeps every search off BLAS


@dataclass
class KMeansResult:
    """Outcome of :func:`kmeans` on this process.

    centroids: (k, D) float32, identical on every process.
    assignments: (n,) int64, the cluster of each row of this process's ``x`` after the
        last empty-cluster fix; ``centroids[c]`` is the mean of the points assigned to c.
    distances: (n,) float32, squared L2 distance of each row to its centroid.
    n_empty_fixed: empty clusters re-seeded, summed over iterations (same on every process).
    n_iters: Lloyd iterations run.
    """

    centroids: torch.Tensor
    assignments: torch.Tensor
    distances: torch.Tensor
    n_empty_fixed: int
    n_iters: int


def _all_reduce(array: np.ndarray, op: str, group) -> np.ndarray:
    """Sum or max of a numpy array over the processes of ``group``; identity without a group.

    ops/dist.py has no max and no group argument, hence this local helper. NCCL groups
    reduce on the current CUDA device, gloo groups on the CPU.
    """
    if not is_dist():
        return array
    device = "cpu"
    if torch_dist.get_backend(group) == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    buf = torch.from_numpy(np.ascontiguousarray(array)).to(device)
    reduce_op = torch_dist.ReduceOp.SUM if op == "sum" else torch_dist.ReduceOp.MAX
    torch_dist.all_reduce(buf, op=reduce_op, group=group)
    return buf.cpu().numpy()


def _layout(x: np.ndarray, seed: int, group) -> tuple[int, int, int]:
    """(offset of this shard in the global data, N_total, rank 0's seed); checks every shard."""
    world = torch_dist.get_world_size(group) if is_dist() else 1
    rank = torch_dist.get_rank(group) if is_dist() else 0
    if rank < 0:
        raise ValueError("this process is not a member of the given process group")
    info = np.zeros(2 * world + 2, dtype=np.int64)
    info[rank], info[world + rank] = x.shape
    info[2 * world] = seed if rank == 0 else 0
    info[2 * world + 1] = int(not np.isfinite(x).all())
    info = _all_reduce(info, "sum", group)
    sizes, dims = info[:world], info[world:2 * world]
    if info[2 * world + 1]:
        raise ValueError("kmeans: x contains NaN or infinite values")
    if (dims != x.shape[1]).any():
        raise ValueError(f"kmeans: processes hold features of different sizes {dims.tolist()}")
    return int(sizes[:rank].sum()), int(sizes.sum()), int(info[2 * world])


def _assign(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Nearest centroid (squared L2, exact faiss search) of every row: (n,) int64."""
    if len(x) == 0:
        return np.zeros(0, dtype=np.int64)
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    saved = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = _NO_BLAS                 # batch-invariant (docstring)
    try:
        _, nearest = index.search(x, 1)                                    # (n, 1)
    finally:
        faiss.cvar.distance_compute_blas_threshold = saved
    return nearest[:, 0].astype(np.int64)


def _grid(x: np.ndarray, n_total: int, group) -> float:
    """The fixed-point unit of the sums (module docstring): a power of two such that every
    coordinate of every process is at most ``2**bits`` units and ``n_total`` such values
    add up to less than 2**62."""
    largest = _all_reduce(np.array([float(np.abs(x).max()) if x.size else 0.0]), "max", group)[0]
    if largest == 0.0:
        return 1.0
    bits = 62 - math.ceil(math.log2(n_total + 1))
    return math.ldexp(1.0, math.frexp(largest)[1] - bits)               # largest < 2**exponent


def _sums(x: np.ndarray, labels: np.ndarray, n_labels: int, unit: float) -> np.ndarray:
    """Per-label sums of the rows of x (n, D) in ``unit`` (:func:`_grid`), exact: (n_labels, D) int64."""
    sums = torch.zeros(n_labels, x.shape[1], dtype=torch.int64)
    for start in range(0, len(x), _CHUNK):
        rows = torch.from_numpy(np.rint(x[start:start + _CHUNK].astype(np.float64) / unit).astype(np.int64))
        sums.index_add_(0, torch.from_numpy(labels[start:start + _CHUNK]), rows)
    return sums.numpy()


def _coin(global_index: np.ndarray, salt: np.uint64) -> np.ndarray:
    """One pseudo-random bit per global row index (splitmix64 finaliser of index + salt)."""
    z = global_index.astype(np.uint64) + salt
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return ((z ^ (z >> np.uint64(31))) & np.uint64(1)) == 1


def _fix_empty_clusters(x, assignments, sums, counts, unit, offset, rng, group) -> int:
    """Re-seed every empty cluster (module docstring), in place on the local
    ``assignments`` (n,) and the global ``sums`` (k, D) int64 in ``unit`` and ``counts`` (k,).
    Returns the number of clusters fixed."""
    k, n_fixed = len(counts), 0
    while True:
        empty, splittable = np.flatnonzero(counts == 0), np.flatnonzero(counts >= 2)
        if len(empty) == 0 or len(splittable) == 0:
            return n_fixed
        n_round = min(len(empty), len(splittable))
        weights = (counts[splittable] - 1).astype(np.float64)
        sources = rng.choice(splittable, size=n_round, replace=False, p=weights / weights.sum())
        targets = empty[:n_round]
        directions = rng.standard_normal((n_round, x.shape[1]))           # (R, D)
        means = sums[sources] * unit / counts[sources, None]              # (R, D)
        slot_of = np.full(k, -1, dtype=np.int64)
        slot_of[sources] = np.arange(n_round)
        members = np.flatnonzero(slot_of[assignments] >= 0)              # local rows to split
        slots = slot_of[assignments[members]]
        positive = np.zeros(len(members), dtype=bool)
        for start in range(0, len(members), _CHUNK):
            rows, s = members[start:start + _CHUNK], slots[start:start + _CHUNK]
            scores = np.einsum("nd,nd->n", x[rows] - means[s], directions[s])
            positive[start:start + _CHUNK] = scores > 0
        coin = _coin(members + offset, np.uint64(rng.integers(2**63)))    # tie-breaker for coinciding points
        sides = _all_reduce(np.stack([np.bincount(slots[positive], minlength=n_round),
                                      np.bincount(slots[coin], minlength=n_round)]), "sum", group)
        last = np.full(n_round, -1, dtype=np.int64)                        # largest global index
        np.maximum.at(last, slots, members + offset)
        last = _all_reduce(last, "max", group)
        by_projection = (sides[0] > 0) & (sides[0] < counts[sources])      # (R,) rule per split
        by_coin = ~by_projection & (sides[1] > 0) & (sides[1] < counts[sources])
        move = np.where(by_projection[slots], positive,
                        np.where(by_coin[slots], coin, members + offset == last[slots]))
        moved, moved_slots = members[move], slots[move]
        assignments[moved] = targets[moved_slots]
        stats = np.concatenate([_sums(x[moved], moved_slots, n_round, unit),
                                np.bincount(moved_slots, minlength=n_round)[:, None]], axis=1)
        stats = _all_reduce(stats, "sum", group)                          # (R, D + 1) int64
        moved_counts = stats[:, -1]
        sums[targets], counts[targets] = stats[:, :-1], moved_counts
        sums[sources] -= stats[:, :-1]
        counts[sources] -= moved_counts
        n_fixed += n_round


@torch.no_grad()
def kmeans(x, k: int, n_iters: int = 20, seed: int = 0, init=None, group=None) -> KMeansResult:
    """Cluster x (n, D) into k clusters (thesis Eq. 3.2) with Lloyd's algorithm.

    x: this process's features, float tensor (any device; copied to the CPU as float32)
    or array; a process may hold no rows. k: number of clusters, 1 <= k <= N_total.
    n_iters: at most this many assignment + update iterations (DeeperCluster observes
    convergence in 10; 20 by default). seed: only rank 0's is used. init: optional (k, D)
    initial centroids, passed on every process or on none (rank 0's are used).
    group: torch.distributed process group to cluster over (DeeperCluster runs one
    k-means per group of GPUs); None means the default group, or a plain process.
    Every process of the group must call this with the same k, n_iters and group.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().float().numpy()
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"kmeans expects x of shape (N, D), got {x.shape}")
    if k < 1 or n_iters < 1:
        raise ValueError(f"kmeans needs k >= 1 and n_iters >= 1, got k={k}, n_iters={n_iters}")
    if group is not None and not is_dist():
        raise ValueError("kmeans was given a process group but torch.distributed is not initialised")
    offset, n_total, seed = _layout(x, int(seed) % 2**62, group)
    if k > n_total:
        raise ValueError(f"kmeans cannot make k={k} non-empty clusters from {n_total} points")
    d, rng = x.shape[1], np.random.default_rng(seed)
    is_rank0 = (torch_dist.get_rank(group) if is_dist() else 0) == 0
    start = np.zeros((k, d), dtype=np.float64)
    if init is not None:
        init = torch.as_tensor(init).detach().cpu().double().numpy()
        if init.shape != (k, d):
            raise ValueError(f"init must have shape ({k}, {d}), got {init.shape}")
        if is_rank0:
            start[:] = init
    else:
        local = rng.choice(n_total, size=k, replace=False) - offset         # (k,)
        held = (local >= 0) & (local < len(x))
        start[held] = x[local[held]]
    centroids = _all_reduce(start, "sum", group).astype(np.float32)      # (k, D)
    unit = _grid(x, n_total, group)

    previous, n_empty_fixed = None, 0
    for iteration in range(1, n_iters + 1):
        assignments = _assign(x, centroids)                               # (n,)
        changed = len(x) if previous is None else int((assignments != previous).sum())
        stats = np.zeros((k + 1, d + 1), dtype=np.int64)
        stats[:k, :d] = _sums(x, assignments, k, unit)
        stats[:k, d] = np.bincount(assignments, minlength=k)
        stats[k, 0] = changed
        stats = _all_reduce(stats, "sum", group)
        sums, counts = stats[:k, :d], stats[:k, d]
        fixed = _fix_empty_clusters(x, assignments, sums, counts, unit, offset, rng, group)
        n_empty_fixed += fixed
        filled = counts > 0
        centroids[filled] = (sums[filled] * unit / counts[filled, None]).astype(np.float32)
        previous = assignments
        if stats[k, 0] == 0 and fixed == 0:
            break

    distances = np.zeros(len(x), dtype=np.float32)
    for begin in range(0, len(x), _CHUNK):
        diff = x[begin:begin + _CHUNK] - centroids[assignments[begin:begin + _CHUNK]]
        distances[begin:begin + _CHUNK] = np.einsum("nd,nd->n", diff, diff)
    return KMeansResult(centroids=torch.from_numpy(centroids), assignments=torch.from_numpy(assignments),
                        distances=torch.from_numpy(distances), n_empty_fixed=n_empty_fixed,
                        n_iters=iteration)
