"""Distributed helpers that do nothing without a process group (docs/architecture.md, "Distributed").

Every loss and op calls these; in a plain process (tests, one GPU, CPU) they are
identities, and under ``torchrun`` they reduce or gather across processes.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as torch_dist


def is_dist() -> bool:
    return torch_dist.is_available() and torch_dist.is_initialized()


def world_size() -> int:
    return torch_dist.get_world_size() if is_dist() else 1


def rank() -> int:
    return torch_dist.get_rank() if is_dist() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_dist():
        torch_dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes, in place; returns ``tensor``."""
    if is_dist():
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean over processes, in place; returns ``tensor``."""
    if is_dist():
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
        tensor /= world_size()
    return tensor


def all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate along dim 0 the equal-shape tensors of every process (no gradient)."""
    if not is_dist():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    torch_dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def all_gather_uneven(tensor: torch.Tensor) -> torch.Tensor:
    """Like :func:`all_gather` (no gradient), but the processes' row counts may differ
    (e.g. unreadable files dropped from one shard): pads to the largest, gathers, unpads."""
    if not is_dist():
        return tensor
    counts = all_gather(torch.tensor([tensor.shape[0]], device=tensor.device))
    padded = torch.zeros((int(counts.max()), *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[:tensor.shape[0]] = tensor
    rows = all_gather(padded).view(len(counts), -1, *tensor.shape[1:])
    return torch.cat([rows[p, :int(n)] for p, n in enumerate(counts)])


def init_from_env(device_type: str) -> tuple[int, int, int]:
    """Start the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1).

    Returns ``(rank, local_rank, world_size)``; ``(0, 0, 1)`` for a plain process.
    NCCL is used for CUDA, gloo otherwise.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or is_dist():
        return rank(), int(os.environ.get("LOCAL_RANK", "0")), world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    torch_dist.init_process_group(backend=backend)
    return torch_dist.get_rank(), local_rank, torch_dist.get_world_size()


def shared_store_restart_warning(env=None) -> str | None:
    """The warning for a ``torchrun`` launch that allows restarts while lending its rendezvous
    store to the workers (torch >= 2.5's default): the store outlives an attempt, so restarted
    workers can read their peers' addresses of the previous attempt and hang in, or fail
    ("Connection refused"), the process group's start (pytorch/pytorch#135712; here 2 of 5
    restarts hung). None for any other launch."""
    env = os.environ if env is None else env
    if env.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or int(env.get("TORCHELASTIC_MAX_RESTARTS") or 0) <= 0:
        return None
    return ("torchrun lends its rendezvous store to the workers and keeps it over restarts: a restarted "
            "worker can read its peers' addresses of the previous attempt and hang, or fail with "
            "'Connection refused' (pytorch/pytorch#135712). Set TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in "
            "torchrun's environment (examples/slurm_multinode.sbatch does) for a store per attempt.")


def shutdown() -> None:
    if is_dist():
        torch_dist.destroy_process_group()


def all_gather_object(obj):
    """List of ``obj`` from every process (rank order); ``obj`` alone without a group."""
    if not is_dist():
        return obj
    out = [None] * world_size()
    torch_dist.all_gather_object(out, obj)
    return out


class _GatherWithGrad(torch.autograd.Function):
    """Forward: concatenate every process's (N, ...) slice. Backward: each process
    receives the gradient of its own slice summed over processes (all-reduce), since
    every process's loss may depend on every slice."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rows = tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(world_size())]
        torch_dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()                                # never reduce autograd's buffer in place
        torch_dist.all_reduce(grad, op=torch_dist.ReduceOp.SUM)
        start = rank() * ctx.rows
        return grad[start:start + ctx.rows]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate along dim 0 the equal-shape tensors of every process, keeping autograd.

    tensor: (N, ...) on each process; returns (world_size * N, ...) in rank order, the
    calling process's rows at ``[rank * N, (rank + 1) * N)``. The backward gives each
    process ``sum_p dL_p / d(its slice)`` over every process p, so the input gradient is
    that of the sum of all processes' losses: when every process computes the loss of
    the whole gathered batch (Barlow Twins, VICReg) or the mean over its own rows of a
    global-batch loss (SimCLR), it is ``world_size`` times the single-process gradient
    of those rows, and DDP's gradient averaging then gives exactly the single-process
    parameter gradients. Every process must pass the same shape (gloo raises on a
    mismatch; NCCL may hang). Without a process group: the tensor itself.
    """
    if not is_dist():
        return tensor
    return _GatherWithGrad.apply(tensor)
