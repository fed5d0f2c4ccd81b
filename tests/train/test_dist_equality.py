"""Two processes each given half of a batch equal one process given the whole batch
(issue 13: tests that fail when the code is wrong).

For DINO, SwAV, SimCLR, MoCo v2 and DeepCluster-v2, two gloo CPU processes
(torch.multiprocessing spawn, world size 2) run two full training steps (three for MoCo v2,
see below) as the loop does (``train.train``: the method wrapped
in DistributedDataParallel, backward, frozen gradients dropped, an optimizer step, the EMA
of ``ema_pairs``), rank r on rows ``[r B/2, (r+1) B/2)`` of every view; one plain process
runs the same steps on the whole batch. They must agree on the loss (the mean of the two
processes' losses), the DDP-averaged gradients, every parameter and buffer after each
step (DINO's teacher and center, SwAV's and MoCo's queues, MoCo's key encoder), and SwAV's
Sinkhorn codes. Each of these goes through a cross-process reduction
(``nolabel.ops.dist``): DINO's center update (``losses.dino.updated_center``), the
per-prototype sums of ``ops.sinkhorn`` and SwAV's queue push, the negatives gathered with
gradient in ``losses.contrastive.nt_xent``, and MoCo's key push (``ops.queue.FeatureQueue.push``
gathers every process's keys, in rank order, before enqueueing them). A check that one
process on half the batch differs from the whole batch shows the tolerances can see a
missing reduction.

MoCo v2: its queue starts empty, so its first step has no negatives (loss 0, zero
gradients); it runs three steps so that two of them contrast against gathered keys, and
its queue (12 rows, 8 keys a step) wraps at the second push, so the third step reads the
ring in its reordered form. Momentum 0.9 so that the key encoder's EMA moves visibly.

DeepCluster-v2: its step looks up each image's cluster through ``StepInfo.index`` and
scores the projections against k-means centroids held in buffers. The k-means of
``on_epoch_start`` is not part of a step: ``labels`` and ``centroids`` are set after
building, identically in every process (random unit centroids, random labels in
``[0, k)``, no -1, from a fixed generator), and every step's batch is a fixed random set of
dataset positions, rank r given those of its rows. Its memory bank (``memory=True``) gathers
every process's projections at each step, so the bank after a step must equal the whole
batch's. Besides that only DDP's gradient averaging crosses processes (the per-process mean
cross-entropy over equal halves averages to the whole batch's), so that is what its half-batch
check looks at.

The views are fixed random tensors of the ``view_specs`` shapes, not augmented images,
so no augmentation randomness enters. BatchNorm: torch's SyncBatchNorm is GPU-only, so
on CPU each process would normalise its own half: every BatchNorm module is put in eval
mode (fixed running statistics) in both the one- and the two-process model; this test
targets the methods' own cross-process reductions, not BatchNorm.

Tolerances: float32 throughout (SwAV casts its projections to float32 whatever the
model's dtype, so float64 is not an option). The two sides sum the same terms in a
different order (halves, then DDP's all-reduce), which moves float32 results by a few
ulps, about 1e-7 relative here; ``RTOL = 1e-4`` and ``ATOL = 1e-6`` leave a wide margin
above that and stay far below the differences a missing reduction makes (at least 1e-3,
checked by ``test_half_batch_alone_differs_from_the_whole_batch``).
"""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from nolabel.backbones import build_backbone
from nolabel.methods import RunShape, StepInfo, get_method
from nolabel.ops.ema import ema_update

WORLD = 2
BATCH = 8               # global batch: 4 rows a process
STEPS = 2
N_IMAGES = 2 * BATCH    # dataset size (RunShape.n_images; DeepCluster-v2's labels cover it)
IMAGE_SIZE = 16
LR = 0.5                # plain SGD, large enough for the parameters to move visibly
RTOL, ATOL = 1e-4, 1e-6
BACKBONE = dict(patch_size=8, depth=1, embed_dim=32, num_heads=2)
# Tiny heads; no frozen layers in the first epoch, so every gradient is compared and
# every parameter steps; DINO's teacher momentum 0.9 so that its EMA moves visibly; SwAV's
# queue (queue_use="filled_rows", from epoch 0) joins Sinkhorn at the second step, split
# over the processes (Swav._codes).
CONFIGS = {
    "dino": dict(out_dim=64, hidden_dim=32, bottleneck_dim=16, n_local_views=2, freeze_last_layer_epochs=0.0,
                 momentum_teacher=0.9, momentum_teacher_end=0.9, warmup_teacher_temp_epochs=0.0),
    "swav": dict(hidden_dim=32, out_dim=16, n_prototypes=24, n_local_views=2, freeze_prototypes_epochs=0.0,
                 queue_size=2 * BATCH, queue_use="filled_rows", queue_start_epoch=0),
    "simclr": dict(hidden_dim=32, out_dim=16, temperature=0.5),
    "mocov2": dict(hidden_dim=32, out_dim=16, queue_size=12, momentum=0.9),
    "deepclusterv2": dict(hidden_dim=32, out_dim=16, n_heads=2, n_prototypes=6, n_local_views=2, blur=False,
                          memory=True),
}
METHODS = tuple(CONFIGS)
# MoCo's first step has an empty queue (docstring): a third step contrasts against the wrapped ring.
N_STEPS = {"mocov2": 3}


def n_steps(name: str) -> int:
    return N_STEPS.get(name, STEPS)


def build(name: str) -> torch.nn.Module:
    """The method with the same initial weights in every process; BatchNorm in eval mode."""
    torch.manual_seed(0)
    method_cls = get_method(name)
    cfg = method_cls.Config(**CONFIGS[name])
    backbone = build_backbone("vit_tiny", image_size=IMAGE_SIZE, **BACKBONE)
    method = method_cls(cfg, backbone, RunShape(image_size=IMAGE_SIZE, epochs=1, n_images=N_IMAGES))
    if name == "deepclusterv2":     # what on_epoch_start's k-means would leave (docstring)
        g = torch.Generator().manual_seed(7)
        with torch.no_grad():
            method.centroids.copy_(F.normalize(torch.randn(method.centroids.shape, generator=g), dim=-1))
            method.labels.copy_(torch.randint(0, cfg.n_prototypes, method.labels.shape, generator=g,
                                              dtype=torch.int32))
            method.label_epoch.fill_(0)
    method.train()
    for m in method.modules():
        if isinstance(m, _BatchNorm):
            m.eval()            # per-process batch statistics would differ from the whole batch's (docstring)
    return method


def step_views(method, step: int) -> list[torch.Tensor]:
    """The whole batch's views of ``step``: (BATCH, 3, size, size) per view, globals first."""
    g = torch.Generator().manual_seed(1000 + step)
    return [torch.randn(BATCH, 3, spec.size, spec.size, generator=g)
            for spec in method.view_specs() for _ in range(spec.count)]


def step_index(step: int) -> torch.Tensor:
    """The whole batch's dataset positions at ``step``: (BATCH,) int64, distinct."""
    g = torch.Generator().manual_seed(2000 + step)
    return torch.randperm(N_IMAGES, generator=g)[:BATCH]


def run(name: str, rank: int = 0, world: int = 1, rows: slice | None = None) -> list[dict]:
    """STEPS steps of ``name`` as the loop runs them; this process takes ``rows`` of every
    view (the whole batch by default). Returns per step: the loss, the gradients (averaged
    over processes by DDP), the state dict after the step and SwAV's codes."""
    method = build(name)
    model = torch.nn.parallel.DistributedDataParallel(method) if world > 1 else method
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=LR)
    steps = n_steps(name)
    schedules = method.schedules(steps, steps)
    codes = []
    if name == "swav":
        compute_codes = method._codes

        def recording_codes(*args):
            out = compute_codes(*args)
            codes.append(out[0].clone())
            return out
        method._codes = recording_codes
    rows = rows if rows is not None else slice(0, BATCH)
    record = []
    for step in range(steps):
        values = {"lr": LR, "weight_decay": 0.0, **{k: fn(step) for k, fn in schedules.items()}}
        info = StepInfo(step, 0, steps, steps, values, index=step_index(step)[rows])
        views = [v[rows] for v in step_views(method, step)]
        loss, _ = model(views, info)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in method.named_parameters() if p.grad is not None}
        for p in method.frozen_parameters(info):
            p.grad = None
        optimizer.step()
        for student, teacher in method.ema_pairs():
            ema_update(teacher, student, values["teacher_momentum"])
        record.append({"loss": loss.detach().clone(), "grads": grads,
                       "state": {k: v.detach().clone() for k, v in method.state_dict().items()},
                       "codes": codes[-1] if codes else None})
    return record


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch_dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        half = BATCH // WORLD
        results = {name: run(name, rank, WORLD, slice(rank * half, (rank + 1) * half)) for name in METHODS}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        torch_dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist_equality")
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


@pytest.fixture(scope="module")
def one_process():
    assert not torch_dist.is_initialized()
    return {name: run(name) for name in METHODS}


def assert_close(got, want, what):
    assert got.shape == want.shape, what
    diff = (got.double() - want.double()).abs().max().item()
    assert torch.allclose(got, want, rtol=RTOL, atol=ATOL), f"{what}: max abs difference {diff:.3g}"


@pytest.mark.parametrize("name", METHODS)
def test_two_half_batches_equal_the_whole_batch(name, two_processes, one_process):
    whole = one_process[name]
    parts = [result[name] for result in two_processes]
    assert len(whole) == n_steps(name) and all(len(p) == len(whole) for p in parts), name
    for step in range(len(whole)):
        want = whole[step]
        # the loss: each process returns its own rows' mean; the global batch's is their mean
        assert_close(sum(p[step]["loss"] for p in parts) / WORLD, want["loss"], f"{name} step {step} loss")
        for rank, part in enumerate(parts):
            got = part[step]
            assert set(got["grads"]) == set(want["grads"]) and want["grads"], name
            for key, grad in want["grads"].items():
                assert_close(got["grads"][key], grad, f"{name} step {step} rank {rank} gradient of {key}")
            assert set(got["state"]) == set(want["state"]), name
            for key, value in want["state"].items():      # parameters after SGD + EMA, center, queue
                if value.is_floating_point():
                    assert_close(got["state"][key], value, f"{name} step {step} rank {rank} {key} after the step")
                else:
                    assert torch.equal(got["state"][key], value), f"{name} step {step} rank {rank} {key}"
        if name == "swav":    # codes (V_c, B/2, K) per process: the whole batch's rows, split
            got_codes = torch.cat([p[step]["codes"] for p in parts], dim=1)
            assert_close(got_codes, want["codes"], f"swav step {step} Sinkhorn codes")
    if name == "dino":
        assert not torch.equal(whole[-1]["state"]["center"], torch.zeros_like(whole[-1]["state"]["center"]))
    if name == "swav":       # the queue took part: the second step's codes used the first step's rows
        assert int(whole[-1]["state"]["queues.0.filled"]) == 2 * BATCH
    if name == "mocov2":     # negatives from the second step on; the ring wrapped (12 rows, 3 x 8 keys)
        assert float(whole[0]["loss"]) == 0.0 and all(float(r["loss"]) > 0 for r in whole[1:])
        assert int(whole[-1]["state"]["queue.filled"]) == 12 and int(whole[-1]["state"]["queue.ptr"]) == 0
        assert int(whole[1]["state"]["queue.ptr"]) == 4
        assert not torch.equal(whole[-1]["state"]["teacher.projector.0.weight"],
                               whole[-1]["state"]["student.projector.0.weight"])


def test_half_batch_alone_differs_from_the_whole_batch(one_process):
    """Without the cross-process reductions a process would compute its half alone: the
    tolerances above must tell that apart from the whole batch (what a missing all-reduce
    or gather would give). MoCo v2: the queue after the first step (a push without the
    gather holds 4 keys, not 8). DeepCluster-v2: nothing of its step crosses processes but
    DDP's gradient averaging, so the check is that a half batch's own gradients differ from
    the whole batch's (what a missing DDP averaging would leave)."""
    for name in METHODS:
        half = run(name, rows=slice(0, BATCH // WORLD))[0]
        whole = one_process[name][0]
        if name == "dino":
            key, got, want = "center", half["state"]["center"], whole["state"]["center"]
        elif name == "swav":
            key, got, want = "codes", half["codes"], whole["codes"][:, :BATCH // WORLD]
        elif name == "mocov2":
            key, got, want = "queue", half["state"]["queue.queue"], whole["state"]["queue.queue"]
        elif name == "deepclusterv2":
            key = "gradients"
            got, want = (torch.cat([g.flatten() for _, g in sorted(r["grads"].items())]) for r in (half, whole))
        else:
            key, got, want = "loss", half["loss"], whole["loss"]   # SimCLR: fewer negatives, another loss
        assert not torch.allclose(got, want, rtol=RTOL, atol=ATOL), f"{name}: {key}"
        assert (got - want).abs().max() > 10 * (ATOL + RTOL * want.abs().max()), f"{name}: {key}"
