"""Worker for test_kmeans_dist.py, launched by ``torch.distributed.run`` with 2 processes.

Usage: python -m torch.distributed.run --nproc_per_node 2 _kmeans_dist_worker.py OUT_DIR
Each process builds the same global data per scenario, keeps its shard (uneven, rank
order) and writes ``OUT_DIR/<scenario>_rank<r>.pt`` with its shard and its k-means result.
"""
import sys

import numpy as np
import torch

from nolabel.ops import dist
from nolabel.ops.kmeans import kmeans


def scenarios():
    """name -> (global x (N, D) float32, rows held by rank 0, k, n_iters, init or None)."""
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((6, 16)) * 2
    blob_x = (centers[rng.integers(6, size=300)] + 0.5 * rng.standard_normal((300, 16))).astype(np.float32)
    distinct = rng.standard_normal((5, 4)).astype(np.float32)
    dup_x = distinct[rng.permutation(np.repeat(np.arange(5), 8))]         # 40 points, 5 distinct
    rand_x = rng.random((400, 8)).astype(np.float32)
    far_init = np.concatenate([rand_x[:15], np.full((5, 8), 1e3, dtype=np.float32)])
    return {
        "blobs": (blob_x, 130, 6, 15, None),          # random init from the global index space
        "duplicates": (dup_x, 17, 9, 5, None),        # k > distinct points: single-point splits
        "far_init": (rand_x, 250, 20, 10, far_init),  # empty clusters split along a random direction
        "one_sided": (blob_x[:50], 50, 4, 10, None),  # rank 1 holds no rows
        "collapsed": (np.ones((60, 3), dtype=np.float32), 25, 12, 3, None),  # identical points: hashed halves
    }


def main(out_dir):
    rank, _, world = dist.init_from_env("cpu")
    assert world == 2, world
    for name, (x, split, k, n_iters, init) in scenarios().items():
        shard = x[:split] if rank == 0 else x[split:]
        if init is not None and rank != 0:
            init = np.zeros_like(init)                 # only rank 0's init counts
        result = kmeans(torch.from_numpy(shard), k, n_iters=n_iters, seed=3 + 100 * rank, init=init)
        torch.save({"x": torch.from_numpy(shard), "k": k, "n_iters": n_iters,
                    "init": None if init is None else torch.from_numpy(init),
                    "centroids": result.centroids, "assignments": result.assignments,
                    "distances": result.distances, "n_empty_fixed": result.n_empty_fixed,
                    "iterations": result.n_iters}, f"{out_dir}/{name}_rank{rank}.pt")
    dist.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
