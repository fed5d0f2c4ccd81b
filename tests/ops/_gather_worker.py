"""Worker for tests/ops/test_gather_grad.py, launched with
``python -m torch.distributed.run --nproc_per_node 2 _gather_worker.py OUT_DIR`` (gloo, CPU).

Each process takes its rows of one fixed seeded global batch, computes the losses
under the process group and saves, to OUT_DIR/rank{r}.pt, the loss values and the
gradients of its own rows; the test compares them with one plain process over the
whole batch.
"""
import sys

import torch
import torch.distributed as torch_dist
from torch import nn

from nolabel.losses.contrastive import nt_xent
from nolabel.losses.redundancy import barlow_twins_loss, vicreg_loss
from nolabel.ops.dist import all_gather_with_grad
from nolabel.ops.queue import FeatureQueue

GLOBAL_BATCH, DIM = 8, 5


def global_views():
    """The fixed global batch: two (GLOBAL_BATCH, DIM) float64 views and a Linear layer."""
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(GLOBAL_BATCH, DIM, generator=g, dtype=torch.float64)
    z2 = z1 + 0.3 * torch.randn(GLOBAL_BATCH, DIM, generator=g, dtype=torch.float64)
    torch.manual_seed(1)
    layer = nn.Linear(DIM, DIM).double()
    return z1, z2, layer


LOSSES = {
    "nt_xent": lambda a, b: nt_xent(a, b, 0.2),
    "barlow": lambda a, b: barlow_twins_loss(a, b, lambd=0.05),
    "vicreg": lambda a, b: vicreg_loss(a, b)[0],
}


def main(out_dir: str) -> None:
    torch_dist.init_process_group("gloo")
    rank, world = torch_dist.get_rank(), torch_dist.get_world_size()
    z1, z2, layer = global_views()
    n = GLOBAL_BATCH // world
    mine = slice(rank * n, (rank + 1) * n)
    result = {"world": world}

    # the raw op: loss_r = sum(weights_r * gathered) gives x_r the grad sum_p weights_p[rows of r]
    x = torch.full((2, 3), float(rank), dtype=torch.float64, requires_grad=True)
    gathered = all_gather_with_grad(x)
    (gathered * (rank + 1.0) * torch.arange(2.0 * world * 3).reshape(-1, 3)).sum().backward()
    result["gathered"], result["gather_grad"] = gathered.detach(), x.grad

    # each loss on this process's rows: value and input gradients
    for name, loss_fn in LOSSES.items():
        a, b = z1[mine].clone().requires_grad_(True), z2[mine].clone().requires_grad_(True)
        loss = loss_fn(a, b)
        loss.backward()
        result[name] = (loss.detach(), a.grad, b.grad)

    # DDP-style: gradients of a shared layer averaged over processes
    for name, loss_fn in LOSSES.items():
        layer.zero_grad()
        loss_fn(layer(z1[mine]), layer(z2[mine])).backward()
        grads = [p.grad.clone() for p in layer.parameters()]
        for grad in grads:
            torch_dist.all_reduce(grad)
            grad /= world
        result[f"{name}_layer_grads"] = grads

    # the queue gathers before writing: every process holds the same rows, rank order
    queue = FeatureQueue(size=5, dim=2)
    queue.push(torch.full((2, 2), 10.0 + rank))
    queue.push(torch.full((2, 2), 20.0 + rank))
    result["queue"] = queue.features().clone()

    torch.save(result, f"{out_dir}/rank{rank}.pt")
    torch_dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
