"""Worker for tests/ops/test_sinkhorn.py, launched by ``torch.distributed.run`` with 2
processes: rank 0 takes rows 0-4 and rank 1 rows 5-11 of each score matrix, runs
``sinkhorn_knopp`` under the gloo group and saves its codes to ``<out>/rank<r>.pt``
("random", "one_iteration" and "many_prototypes" take the linear domain, the others the log domain);
rank 0 also saves the full inputs to ``<out>/full.pt``."""
import sys
from pathlib import Path

import torch
import torch.distributed as torch_dist

from nolabel.ops.dist import init_from_env, shutdown
from nolabel.ops.sinkhorn import sinkhorn_knopp

SPLIT = (5, 7)


def cases() -> dict:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(12, 6, generator=g)
    dominant = z.clone()
    dominant[:, 2] += 50.0
    # each process's rows alone fit the linear domain, not together: every process must take the log domain
    split_range = torch.tanh(z)
    split_range[SPLIT[0]:] += 3.0
    return {
        "random": (torch.tanh(z), 0.05, 3),
        "one_iteration": (torch.tanh(z), 0.05, 1),
        "huge": (z * 1e4, 0.05, 3),
        "dominant_prototype": (dominant, 0.05, 3),
        "many_prototypes": (torch.randn(12, 20, generator=g), 0.1, 10),
        "split_range": (split_range, 0.05, 3),
    }


def main(out: Path) -> None:
    rank, _, world = init_from_env("cpu")
    assert world == 2 and torch_dist.is_initialized()
    start = sum(SPLIT[:rank])
    codes = {}
    for name, (scores, eps, n_iters) in cases().items():
        codes[name] = sinkhorn_knopp(scores[start:start + SPLIT[rank]], eps=eps, n_iters=n_iters)
    torch.save(codes, out / f"rank{rank}.pt")
    if rank == 0:
        torch.save(cases(), out / "full.pt")
    shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
