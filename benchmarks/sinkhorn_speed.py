"""Sinkhorn-Knopp in the linear and the log domain (nolabel.ops.sinkhorn), timed on SwAV's
queue shape: 3840 rows (15 batches of 256, thesis 4.2.3) x 3000 prototypes, 3 iterations,
cosine scores, float32. The two are alternated ``--repeats`` times; prints the median
milliseconds of each, the speed-up and their largest difference, as JSON.

    python benchmarks/sinkhorn_speed.py --threads 1
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F

from nolabel.ops.sinkhorn import sinkhorn_knopp


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=3840)
    p.add_argument("--prototypes", type=int, default=3000)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    scores = F.normalize(torch.randn(args.rows, 128, generator=g), dim=1) @ \
        F.normalize(torch.randn(args.prototypes, 128, generator=g), dim=1).T
    times: dict[str, list[float]] = {"linear": [], "log": []}
    for i in range(args.repeats + 1):
        for domain in times:
            t = time.perf_counter()
            sinkhorn_knopp(scores, 0.05, args.iters, domain=domain)
            if i:                                                    # the first pair warms up
                times[domain].append(time.perf_counter() - t)
    ms = {d: 1e3 * statistics.median(v) for d, v in times.items()}
    diff = (sinkhorn_knopp(scores, 0.05, args.iters, domain="linear")
            - sinkhorn_knopp(scores, 0.05, args.iters, domain="log")).abs().max()
    report = {"shape": [args.rows, args.prototypes], "iters": args.iters, "threads": torch.get_num_threads(),
              "linear_ms": round(ms["linear"], 2), "log_ms": round(ms["log"], 2),
              "speed_up": round(ms["log"] / ms["linear"], 2), "max_abs_diff": float(diff),
              "load_average": [round(x, 2) for x in os.getloadavg()], "torch": torch.__version__}
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
