from collections import Counter

import pytest

from nolabel.data import DataError, open_images, open_source
from nolabel.data.subset import split_subset, subset_indices


def test_split_subset():
    assert split_subset("a/b.tar.gz?subset=500") == ("a/b.tar.gz", 500)
    assert split_subset("demo?n=10") == ("demo?n=10", None)


def test_subset_is_stratified_seeded_and_sorted():
    labels = [0] * 60 + [1] * 30 + [2] * 10
    idx = subset_indices(labels, 50)
    assert len(idx) == 50 == len(set(idx)) and idx == sorted(idx)
    counts = Counter(labels[i] for i in idx)
    assert counts == {0: 30, 1: 15, 2: 5}
    assert subset_indices(labels, 50) == idx
    assert subset_indices(labels, 1000) == list(range(100))


def test_subset_of_a_source_keeps_items_and_labels():
    full = open_source("demo?n=100")
    sub = open_source("demo?n=100?subset=20")
    assert len(sub) == 20
    for k, key in enumerate(sub.keys):
        i = full.keys.index(key)
        assert sub.labels[k] == full.labels[i]
        assert (sub.images[k] == full.images[i]).all()
    assert len(open_images("demo?n=100?subset=30", progress=False)) == 30
    with pytest.raises(DataError):
        open_source("demo?n=100?subset=0")




def test_subset_of_a_file_folder_reads_through_the_parent(labelled_folder):
    sub = open_images(f"{labelled_folder}?subset=6", image_size=16, in_memory=False, progress=False)
    assert len(sub) == 6
    seen = [b for b in sub.batches(3, shuffle=False, drop_last=False)]
    assert sum(len(b.labels) for b in seen) + len({k for b in seen for k, _ in b.bad}) == 6
    assert set(sub.classes) == {"cat", "dog", "emu"}
