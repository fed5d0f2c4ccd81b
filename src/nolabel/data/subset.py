"""``SPEC?subset=N``: a seeded, class-stratified subset of any source, so a user (or
a CPU benchmark) can try a method on part of a collection without copying files."""
from __future__ import annotations

import re

import numpy as np

from nolabel.data.errors import DataError
from nolabel.data.sources import Source

_SUBSET = re.compile(r"^(?P<base>.+)\?subset=(?P<n>\d+)$")


def split_subset(spec: str) -> tuple[str, int | None]:
    """``"path?subset=5000"`` -> ``("path", 5000)``; other specs -> ``(spec, None)``."""
    match = _SUBSET.match(spec.strip())
    if match is None:
        return spec, None
    return match.group("base"), int(match.group("n"))


def subset_indices(labels: list[int], n: int, seed: int = 0) -> list[int]:
    """``n`` indices drawn without replacement, each class in proportion to its size
    (floor), the remainder filled in random order; returned sorted."""
    total = len(labels)
    if n >= total:
        return list(range(total))
    rng = np.random.default_rng(seed)
    order = rng.permutation(total)
    labels_arr = np.asarray(labels)
    chosen: list[int] = []
    for c in np.unique(labels_arr):
        members = order[labels_arr[order] == c]
        chosen += members[: (len(members) * n) // total].tolist()
    taken = set(chosen)
    for i in order:
        if len(chosen) >= n:
            break
        if int(i) not in taken:
            chosen.append(int(i))
            taken.add(int(i))
    return sorted(chosen)


def heldout_split(labels: list[int], n_bank: int, n_test: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """Two disjoint seeded, class-stratified index lists ``(bank, test)``: ``test`` is
    :func:`subset_indices` of ``n_test`` items, ``bank`` the same of ``n_bank`` among
    the rest (each capped by what is available); both sorted."""
    test = subset_indices(labels, n_test, seed)
    taken = set(test)
    rest = [i for i in range(len(labels)) if i not in taken]
    bank = [rest[j] for j in subset_indices([labels[i] for i in rest], n_bank, seed)]
    return bank, test


class SubsetSource(Source):
    """The items ``indices`` of ``parent``, in the parent's order."""

    def __init__(self, name: str, parent: Source, indices: list[int]) -> None:
        super().__init__(name, [parent.keys[i] for i in indices], [parent.labels[i] for i in indices],
                         parent.classes)
        self.parent = parent
        self.indices = indices
        if parent.images is not None:
            self.images = parent.images[indices]
        if parent.masks is not None:
            self.masks = parent.masks[indices]

    def read(self, index: int) -> bytes:
        return self.parent.read(self.indices[index])

    def location(self, index: int) -> str:
        return self.parent.location(self.indices[index])


def take_subset(spec: str, parent: Source, n: int) -> Source:
    if n < 1:
        raise DataError(f"data spec {spec!r}: subset size must be at least 1")
    return SubsetSource(spec, parent, subset_indices(parent.labels, n))
