"""Permutation sets with a large minimal Hamming distance, for the jigsaw pretext task
(Noroozi and Favaro, "Unsupervised Learning of Visual Representations by Solving Jigsaw
Puzzles", ECCV 2016, Section 3.2 and Algorithm 1).

The network classifies which permutation of a fixed set shuffled the tiles; the set is
chosen so that its permutations differ in as many positions as possible (the paper's
Table 3: a larger minimal Hamming distance makes the task less ambiguous and the
features better). Greedy construction (Algorithm 1): start from one random permutation,
then repeatedly add the permutation whose minimal Hamming distance to the set chosen so
far is largest (ties: the first in lexicographic order). Pure functions, CPU tensors.
"""
from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np
import torch


@lru_cache(maxsize=4)
def all_permutations(n_items: int) -> torch.Tensor:
    """Every permutation of ``range(n_items)`` in lexicographic order: int8 (n_items!, n_items)."""
    if not 1 <= n_items <= 10:
        raise ValueError(f"n_items must be in 1..10 (n! rows are enumerated), got {n_items}")
    flat = itertools.chain.from_iterable(itertools.permutations(range(n_items)))
    return torch.from_numpy(np.fromiter(flat, dtype=np.int8).reshape(-1, n_items))


def hamming_distances(perms: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Positions in which rows differ: perms (P, n), other (Q, n) -> int64 (P, Q)."""
    return (perms[:, None, :] != other[None, :, :]).sum(dim=-1)


def min_hamming_distance(perms: torch.Tensor) -> int:
    """Smallest Hamming distance between two distinct rows of ``perms`` (P >= 2)."""
    if len(perms) < 2:
        raise ValueError("need at least two permutations")
    d = hamming_distances(perms, perms)
    d.fill_diagonal_(perms.shape[1] + 1)
    return int(d.min())


def max_hamming_permutations(n_permutations: int, n_items: int = 9, seed: int = 0) -> torch.Tensor:
    """Greedy maximal-Hamming-distance permutation set (Algorithm 1 of Noroozi and Favaro).

    Returns int64 (n_permutations, n_items); row k is permutation k, the class the
    jigsaw head predicts. The first row is drawn with ``torch.Generator().manual_seed(seed)``,
    the rest are deterministic, so the set depends on ``seed`` only. Each new row maximises
    ``min_{p in set} hamming(row, p)`` over every unused permutation of ``n_items``.
    Cost: ``n_permutations x n_items!`` comparisons, done column by column in numpy.
    """
    pool = all_permutations(n_items)                                   # (N!, n) int8
    if not 1 <= n_permutations <= len(pool):
        raise ValueError(f"n_permutations must be in 1..{len(pool)} for {n_items} items, got {n_permutations}")
    generator = torch.Generator().manual_seed(seed)
    j = int(torch.randint(len(pool), (1,), generator=generator))
    columns = np.ascontiguousarray(pool.numpy().T)                     # (n, N!): one row per position

    def distances_to(row: int) -> np.ndarray:                          # (N!,) uint8 Hamming distances
        d = np.zeros(columns.shape[1], dtype=np.uint8)
        for column in columns:
            d += column != column[row]
        return d

    chosen = [j]
    # min distance of every candidate to the chosen set; chosen rows are at 0 and never re-picked
    min_dist = distances_to(j)
    for _ in range(n_permutations - 1):
        j = int(np.argmax(min_dist))                                   # first maximiser
        chosen.append(j)
        np.minimum(min_dist, distances_to(j), out=min_dist)
    return pool[chosen].long()

def permutation_index(perm_set: torch.Tensor, perm) -> int:
    """Row of ``perm_set`` (P, n) equal to ``perm`` (n,), i.e. the class label; ValueError if absent."""
    perm = torch.as_tensor(perm, dtype=perm_set.dtype).view(1, -1)
    hits = (perm_set == perm).all(dim=1).nonzero().view(-1)
    if hits.numel() == 0:
        raise ValueError(f"{perm.view(-1).tolist()} is not in the permutation set")
    return int(hits[0])

