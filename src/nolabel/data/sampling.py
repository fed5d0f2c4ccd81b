"""Epoch order, sharding across ranks and batch counts, independent of any global RNG.

The order of a shuffled epoch depends only on ``(seed, epoch)``, so a run resumed
at ``(epoch, start_step)`` sees exactly the batches an uninterrupted run would.
Sharding follows ``DistributedSampler``: the epoch order is truncated
(``drop_last``) or padded by wrapping around so that every rank gets the same
number of items, and rank ``r`` takes items ``r, r + world_size, ...``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["epoch_order", "items_per_rank", "rank_order", "num_steps"]


def _generator(seed: int, epoch: int) -> torch.Generator:
    """A torch generator seeded from (seed, epoch) through numpy's SeedSequence mixing."""
    words = np.random.SeedSequence([seed % 2**64, epoch % 2**64]).generate_state(2, np.uint32)
    generator = torch.Generator()
    generator.manual_seed((int(words[0]) << 31) ^ int(words[1]))
    return generator


def epoch_order(n: int, shuffle: bool, seed: int = 0, epoch: int = 0) -> torch.Tensor:
    """int64 (n,): a permutation drawn from (seed, epoch) when shuffling, else 0..n-1."""
    if not shuffle:
        return torch.arange(n, dtype=torch.int64)
    return torch.randperm(n, generator=_generator(seed, epoch))


def items_per_rank(n: int, world_size: int, drop_last: bool) -> int:
    """Items each rank sees: floor(n / world_size) when dropping, else ceil (padded)."""
    return n // world_size if drop_last else math.ceil(n / world_size)


def rank_order(order: torch.Tensor, rank: int, world_size: int, drop_last: bool) -> torch.Tensor:
    """This rank's items, int64 (items_per_rank,), from the full epoch ``order`` (n,)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    n = len(order)
    per_rank = items_per_rank(n, world_size, drop_last)
    total = per_rank * world_size
    if total > n and n > 0:
        repeats = math.ceil(total / n)
        order = order.repeat(repeats)
    return order[:total][rank::world_size]


def num_steps(per_rank: int, batch_size: int, drop_last: bool) -> int:
    """Batches per epoch for one rank holding ``per_rank`` items."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)
