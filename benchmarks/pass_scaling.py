"""Does the whole-dataset pass scale over processes? (issue 14, part 3)

    python benchmarks/pass_scaling.py                       # CIFAR-10 train, 1 then 2 processes
    python benchmarks/pass_scaling.py --data demo?n=256 --repeats 1   # seconds (the suite's)

The pass DeepCluster, DeepCluster-v2 and SeLa-v2 make at every labelling
(``train_setup.whole_dataset_pass``: each process embeds its shard in order, the rows are
gathered and sorted by dataset position) timed with one process, then with ``--procs``
processes over gloo on the same machine, each with ``--threads`` threads (1: the CPUs are
split between processes, not shared), the embedding being DeepCluster-v2's (ResNet-18 x0.25
small stem, projector, l2 normalisation; random weights, seeded: the same network in every
process), and DeepCluster-v2's whole labelling (``on_epoch_start``: the pass, then k-means
sharded the same way).
Prints one JSON object: the median seconds of each over ``--repeats``, the speed-ups, and
whether every process's rows and labels equal the one-process ones.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

from nolabel.backbones import build_backbone
from nolabel.data import open_images
from nolabel.methods import RunShape
from nolabel.methods.deepclusterv2 import DeepClusterV2, DeepClusterV2Config
from nolabel.ops.kmeans import kmeans
from nolabel.train_setup import whole_dataset_pass

sys.path.insert(0, str(Path(__file__).resolve().parent))    # spawned processes import this module by name
KMEANS_ITERS = 10
DEFAULT_DATA = str(Path(__file__).resolve().parents[2] / "shared/datasets/cifar10/train.tar.gz")


def _time_pass(rank: int, world: int, a, out_dir: str) -> None:
    """One process of the measurement (rank 0 of 1, or one of ``world`` under gloo)."""
    torch.set_num_threads(a.threads)
    if world > 1:
        import torch.distributed as torch_dist
        torch_dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        data = open_images(a.data, in_memory=True, progress=False)
        backbone = build_backbone("resnet18", image_size=data.image_size, width=0.25, small_stem=True)
        cfg = DeepClusterV2Config(n_prototypes=a.k, n_heads=1, kmeans_iters=KMEANS_ITERS)
        method = DeepClusterV2(cfg, backbone, RunShape(image_size=data.image_size, epochs=1, n_images=len(data)))
        data_pass = whole_dataset_pass(method, data, a.batch_size, torch.device("cpu"), contextlib.nullcontext(),
                                       rank, world, logging.getLogger("pass_scaling"))
        passes, labelling = [], []
        for r in range(a.repeats):
            t = time.perf_counter()
            z, index = data_pass(method.embed)
            passes.append(time.perf_counter() - t)
            t = time.perf_counter()
            method.on_epoch_start(r, data_pass)          # the pass again, then k-means
            labelling.append(time.perf_counter() - t)
        same = None
        if world > 1:
            # k-means alone: the one-process rows, split over the processes in rank order
            rows = torch.load(Path(out_dir).parent / "1" / "rank0.pt")["z"]
            share = torch.tensor_split(rows, world)[rank]
            same = kmeans(share, a.k, n_iters=KMEANS_ITERS, seed=0).assignments
        torch.save({"z": z, "index": index, "labels": method.labels.clone(), "pass": passes,
                    "labelling": labelling, "same_rows_labels": same}, f"{out_dir}/rank{rank}.pt")
    finally:
        if world > 1:
            torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="threads per process")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--k", type=int, default=100, help="k-means clusters")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    report = {"benchmark": "pass_scaling", "data": a.data, "threads_per_process": a.threads,
              "load_average_before": [round(x, 2) for x in os.getloadavg()], "command": " ".join(sys.argv)}
    results = {}
    with tempfile.TemporaryDirectory(prefix="nolabel-pass-") as tmp:
        for world in (1, a.procs):
            folder = Path(tmp) / str(world)
            folder.mkdir()
            if world == 1:
                _time_pass(0, 1, a, str(folder))
            else:
                os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
                worker = importlib.import_module(Path(__file__).stem)._time_pass   # picklable by name
                mp.spawn(worker, args=(world, a, str(folder)), nprocs=world, join=True)
            results[world] = [torch.load(folder / f"rank{r}.pt") for r in range(world)]
    one, many = results[1][0], results[a.procs]
    for n, key in (("pass", "pass"), ("labelling_with_pass", "labelling")):
        t1 = statistics.median(one[key])
        tn = statistics.median(max(r[key][i] for r in many) for i in range(a.repeats))   # the slowest process
        report[f"{n}_seconds"] = {"1": round(t1, 2), str(a.procs): round(tn, 2)}
        report[f"{n}_speedup"] = round(t1 / tn, 2)
    report["images"] = len(one["index"])
    report["rows_equal"] = all(torch.equal(r["index"], one["index"]) and torch.allclose(r["z"], one["z"], atol=1e-5)
                               for r in many)
    # the network's output for an image can differ in its last bits with the batch it is in
    # (other batch shapes, other kernels), and k-means amplifies that at cluster boundaries
    report["rows_identical"] = all(torch.equal(r["z"], one["z"]) for r in many)
    report["rows_max_abs_diff"] = max(float((r["z"] - one["z"]).abs().max()) for r in many)
    report["labels_equal"] = all(torch.equal(r["labels"], one["labels"]) for r in many)
    report["labels_agreement"] = round(min(float((r["labels"] == one["labels"]).float().mean()) for r in many), 5)
    # k-means alone on identical rows: one process against the processes each holding a share
    alone = kmeans(one["z"], a.k, n_iters=KMEANS_ITERS, seed=0).assignments
    report["kmeans_on_the_same_rows_labels_equal"] = torch.equal(torch.cat([r["same_rows_labels"] for r in many]),
                                                                 alone)
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
