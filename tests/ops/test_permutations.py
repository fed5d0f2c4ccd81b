"""Greedy maximal-Hamming permutation sets (Noroozi and Favaro 2016, Algorithm 1), checked
against brute force written from the definition (loops over pairs and candidates)."""
from __future__ import annotations

import itertools

import pytest
import torch

from nolabel.ops.permutations import (all_permutations, max_hamming_permutations, min_hamming_distance,
                                      permutation_index)


def naive_hamming(a, b) -> int:
    return sum(x != y for x, y in zip(a, b))


def naive_min_distance(perms) -> int:
    return min(naive_hamming(p, q) for p, q in itertools.combinations(perms, 2))


@pytest.mark.parametrize("n_items,size", [(4, 2), (4, 6), (4, 24), (5, 10), (5, 30)])
def test_greedy_set_against_brute_force(n_items, size):
    perms = [tuple(p) for p in max_hamming_permutations(size, n_items, seed=3).tolist()]
    everything = list(itertools.permutations(range(n_items)))
    assert len(set(perms)) == size                                      # distinct
    assert all(sorted(p) == list(range(n_items)) for p in perms)        # valid permutations
    assert min_hamming_distance(torch.tensor(perms)) == naive_min_distance(perms)
    # each added permutation maximises the minimal distance to those before it, and is the
    # first such candidate in lexicographic order
    for k in range(1, size):
        def score(c):
            return min(naive_hamming(c, p) for p in perms[:k])
        candidates = [c for c in everything if c not in perms[:k]]
        best = max(score(c) for c in candidates)
        assert score(perms[k]) == best
        assert perms[k] == next(c for c in candidates if score(c) == best)


def test_small_sets_reach_the_maximum_distance():
    # 4 items: the 4 cyclic shifts differ everywhere, and greedy finds a set at distance 4
    assert min_hamming_distance(max_hamming_permutations(4, 4)) == 4
    assert min_hamming_distance(max_hamming_permutations(9, 9, seed=1)) == 9


def test_deterministic_from_seed():
    a = max_hamming_permutations(50, 9, seed=7)
    assert torch.equal(a, max_hamming_permutations(50, 9, seed=7))
    assert not torch.equal(a, max_hamming_permutations(50, 9, seed=8))
    assert a.dtype == torch.int64 and a.shape == (50, 9)
    assert torch.equal(a.sort(dim=1).values, torch.arange(9).expand(50, 9))
    assert len({tuple(p) for p in a.tolist()}) == 50
    assert min_hamming_distance(a) >= 6


def test_whole_pool_and_limits():
    assert all_permutations(3).tolist() == [list(p) for p in itertools.permutations(range(3))]
    assert len(max_hamming_permutations(6, 3)) == 6
    with pytest.raises(ValueError):
        max_hamming_permutations(7, 3)
    with pytest.raises(ValueError):
        max_hamming_permutations(0, 3)
    with pytest.raises(ValueError):
        min_hamming_distance(torch.zeros(1, 3))


def test_permutation_index():
    perms = max_hamming_permutations(20, 9)
    for k in (0, 7, 19):
        assert permutation_index(perms, perms[k]) == k
        assert permutation_index(perms, perms[k].tolist()) == k
    missing = next(p for p in all_permutations(9).long() if permutation_index_safe(perms, p) is None)
    with pytest.raises(ValueError):
        permutation_index(perms, missing)


def permutation_index_safe(perms, p):
    try:
        return permutation_index(perms, p)
    except ValueError:
        return None
