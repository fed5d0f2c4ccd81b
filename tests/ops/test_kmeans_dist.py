"""Distributed k-means (thesis 3.3.1): 2 gloo processes equal 1 process on the concatenated data."""
import os
import subprocess
import sys
from pathlib import Path

import torch

from nolabel.ops.kmeans import kmeans

WORKER = Path(__file__).with_name("_kmeans_dist_worker.py")
SCENARIOS = ["blobs", "duplicates", "far_init", "one_sided", "collapsed"]


def test_two_processes_equal_one_process_on_concatenated_shards(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(WORKER), str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in SCENARIOS:
        parts = [torch.load(tmp_path / f"{name}_rank{r}.pt") for r in range(2)]
        assert torch.equal(parts[0]["centroids"], parts[1]["centroids"]), name   # identical everywhere
        x = torch.cat([p["x"] for p in parts])
        # one process, rank 0's seed (rank 1 passed another seed, which must be ignored) and init
        alone = kmeans(x, parts[0]["k"], n_iters=parts[0]["n_iters"], seed=3, init=parts[0]["init"])
        assert torch.equal(parts[0]["centroids"], alone.centroids), name       # exact sums: no rounding order
        assert torch.equal(torch.cat([p["assignments"] for p in parts]), alone.assignments), name
        assert torch.equal(torch.cat([p["distances"] for p in parts]), alone.distances), name
        assert parts[0]["n_empty_fixed"] == parts[1]["n_empty_fixed"] == alone.n_empty_fixed, name
        assert parts[0]["iterations"] == alone.n_iters, name
        assert (torch.bincount(alone.assignments, minlength=parts[0]["k"]) > 0).all(), name
    fixed = {name: torch.load(tmp_path / f"{name}_rank0.pt")["n_empty_fixed"] for name in SCENARIOS}
    assert fixed["duplicates"] > 0 and fixed["far_init"] > 0 and fixed["collapsed"] > 0  # fixes across processes
