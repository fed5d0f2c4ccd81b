"""all_gather_with_grad alone (identity) and under 2 gloo processes, with the losses that
use it. The relation tested under W processes, each holding N / W rows of the batch:

- each process's loss value equals the single-process loss over the whole batch;
- each process's gradient of its own rows is W times the single-process gradient of
  those rows (the gathered backward sums every process's loss, and each one is the
  global loss, or for NT-Xent its mean over local anchors, whose mean is the global loss);
- so parameter gradients averaged over processes, as DDP does, equal the single-process
  parameter gradients exactly.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nolabel.ops.dist import all_gather_with_grad

WORKER = Path(__file__).with_name("_gather_worker.py")


def load_worker():
    spec = importlib.util.spec_from_file_location("_gather_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_identity_without_process_group():
    x = torch.randn(3, 4, requires_grad=True)
    y = all_gather_with_grad(x)
    assert y is x
    (y * 2).sum().backward()
    assert torch.equal(x.grad, torch.full((3, 4), 2.0))


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp("gather")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(WORKER), str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


def test_gather_forward_and_backward_across_processes(two_processes):
    world = 2
    for rank, result in enumerate(two_processes):
        assert result["world"] == world
        want = torch.cat([torch.full((2, 3), float(p), dtype=torch.float64) for p in range(world)])
        assert torch.equal(result["gathered"], want)
        # loss_p = sum((p + 1) * w * gathered): x_r receives sum_p (p + 1) * w[rows of r]
        weights = torch.arange(2.0 * world * 3, dtype=torch.float64).reshape(-1, 3)
        assert torch.equal(result["gather_grad"], 3.0 * weights[2 * rank:2 * rank + 2])


@pytest.mark.parametrize("name", ["nt_xent", "barlow", "vicreg"])
def test_losses_equal_one_process_over_the_global_batch(two_processes, name):
    worker = load_worker()
    z1, z2, _ = worker.global_views()
    a, b = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
    single = worker.LOSSES[name](a, b)
    single.backward()
    world, n = 2, worker.GLOBAL_BATCH // 2
    for rank, result in enumerate(two_processes):
        loss, grad_a, grad_b = result[name]
        mine = slice(rank * n, (rank + 1) * n)
        if name != "nt_xent":                       # NT-Xent: the mean over this process's anchors
            assert loss.item() == pytest.approx(single.item(), rel=1e-12)
        assert torch.allclose(grad_a, world * a.grad[mine], rtol=1e-10, atol=1e-14)
        assert torch.allclose(grad_b, world * b.grad[mine], rtol=1e-10, atol=1e-14)
    mean_loss = sum(r[name][0].item() for r in two_processes) / world
    assert mean_loss == pytest.approx(single.item(), rel=1e-12)


@pytest.mark.parametrize("name", ["nt_xent", "barlow", "vicreg"])
def test_ddp_averaged_parameter_gradients_equal_one_process(two_processes, name):
    worker = load_worker()
    z1, z2, layer = worker.global_views()
    worker.LOSSES[name](layer(z1), layer(z2)).backward()
    for result in two_processes:
        for got, param in zip(result[f"{name}_layer_grads"], layer.parameters()):
            assert torch.allclose(got, param.grad, rtol=1e-10, atol=1e-14)


def test_queue_gathers_before_writing(two_processes):
    # pushes of 2 rows from each of 2 processes: [10, 10, 11, 11] then [20, 20, 21, 21], size 5
    want = torch.tensor([10.0, 11.0, 11.0, 20.0, 20.0, 21.0, 21.0])[-5:]
    for result in two_processes:
        assert torch.equal(result["queue"][:, 0], want)
