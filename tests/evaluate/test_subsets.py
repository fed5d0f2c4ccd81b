"""Few-label subsets: stratified counts, seeding, and files that refuse other labels."""
from __future__ import annotations

import json

import pytest
import torch

from nolabel.evaluate.subsets import class_counts, label_subset, labels_fingerprint, load_subset, save_subset


def labels_of(sizes):
    """Class c repeated sizes[c] times, classes interleaved so that indices are not grouped."""
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])
    return y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]


@pytest.mark.parametrize("sizes,fraction,expected", [
    # round(fraction * count), half up, at least 1, at most all:
    ([10, 4, 1, 25], 0.1, [1, 1, 1, 3]),  # 1.0 -> 1; 0.4 -> 0 -> at least 1; 0.1 -> 1; 2.5 -> 3
    ([3, 5, 8], 0.5, [2, 3, 4]),  # 1.5 -> 2; 2.5 -> 3; 4.0 -> 4
    ([100, 37], 0.01, [1, 1]),  # 1.0 -> 1; 0.37 -> 1 (the minimum)
    ([1300, 732], 0.1, [130, 73]),  # ImageNet-like: 130.0 and 73.2
    ([6, 2], 1.0, [6, 2]),  # everything
])
def test_stratified_counts(sizes, fraction, expected):
    y = labels_of(sizes)
    idx = label_subset(y, fraction, seed=0)
    assert idx.dtype == torch.int64 and idx.ndim == 1
    assert torch.equal(idx, idx.sort().values) and len(set(idx.tolist())) == len(idx)  # sorted, unique
    assert class_counts(y[idx], len(sizes)) == expected


def test_seeded_and_nested():
    y = labels_of([50, 30, 20])
    a = label_subset(y, 0.2, seed=3)
    assert torch.equal(a, label_subset(y, 0.2, seed=3))
    assert not torch.equal(a, label_subset(y, 0.2, seed=4))
    small, large = set(label_subset(y, 0.1, seed=3).tolist()), set(label_subset(y, 0.5, seed=3).tolist())
    assert small <= set(a.tolist()) <= large  # one seed: 10% inside 20% inside 50%
    assert torch.equal(label_subset(y, 1.0, seed=9), torch.arange(100))


def test_missing_class_ids_are_fine():
    y = torch.tensor([0, 0, 5, 5, 5, 5, 9])  # classes 1-4 and 6-8 have no items
    idx = label_subset(y, 0.5, seed=0)
    assert class_counts(y[idx]) == [1, 0, 0, 0, 0, 2, 0, 0, 0, 1]


@pytest.mark.parametrize("labels,fraction,seed,match", [
    (torch.tensor([0, 1]), 0.0, 0, "fraction"),
    (torch.tensor([0, 1]), 1.5, 0, "fraction"),
    (torch.tensor([0, 1]), 0.5, -1, "seed"),
    (torch.tensor([0, -1]), 0.5, 0, "negative"),
    (torch.tensor([0.0, 1.0]), 0.5, 0, "integer"),
    (torch.zeros(0, dtype=torch.long), 0.5, 0, "non-empty"),
    (torch.zeros(2, 2, dtype=torch.long), 0.5, 0, "1-D"),
])
def test_subset_validation(labels, fraction, seed, match):
    with pytest.raises(ValueError, match=match):
        label_subset(labels, fraction, seed)


def test_save_and_load_round_trip(tmp_path):
    y = labels_of([20, 10, 5])
    idx = label_subset(y, 0.2, seed=1)
    path = tmp_path / "splits" / "c10_20pct.json"
    record = save_subset(path, idx, y, fraction=0.2, seed=1, meta={"data": "demo?n=35"})
    assert not list(path.parent.glob("*.tmp"))  # written atomically
    stored = json.loads(path.read_text())
    assert stored == record
    assert (stored["fraction"], stored["seed"], stored["n"], stored["n_total"]) == (0.2, 1, 7, 35)
    assert stored["per_class"] == [4, 2, 1] and stored["meta"] == {"data": "demo?n=35"}
    assert stored["labels_sha256"] == labels_fingerprint(y)
    loaded, info = load_subset(path, y)
    assert torch.equal(loaded, idx) and "indices" not in info and info["per_class"] == [4, 2, 1]
    assert load_subset(str(path), y.tolist())[0].tolist() == idx.tolist()  # lists and str paths are fine


def test_load_refuses_other_labels(tmp_path):
    y = labels_of([20, 10, 5])
    path = tmp_path / "subset.json"
    save_subset(path, label_subset(y, 0.2, seed=0), y, fraction=0.2, seed=0)
    with pytest.raises(ValueError, match=f"{path}.*35 items.*34"):
        load_subset(path, y[:-1])  # another dataset: other size
    shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(5))]
    with pytest.raises(ValueError, match=f"{path}.*other labels"):
        load_subset(path, shuffled)  # same labels in another order: the indices would pick other items
    relabelled = y.clone()
    relabelled[0] = (relabelled[0] + 1) % 3
    with pytest.raises(ValueError, match=f"{path}.*refusing"):
        load_subset(path, relabelled)


def test_load_rejects_broken_files(tmp_path):
    y = labels_of([4, 4])
    path = tmp_path / "s.json"
    record = save_subset(path, torch.tensor([0, 3]), y)
    assert record["fraction"] is None and record["seed"] is None
    path.write_text(json.dumps({**record, "indices": [0, 3, 5]}))  # n and per_class no longer agree
    with pytest.raises(ValueError, match=f"{path}: inconsistent"):
        load_subset(path, y)
    path.write_text(json.dumps({**record, "indices": [0, 99]}))
    with pytest.raises(ValueError, match=rf"{path}: indices must lie in \[0, 8\)"):
        load_subset(path, y)
    path.write_text("{not json")
    with pytest.raises(ValueError, match=f"{path}: not a subset file"):
        load_subset(path, y)
    path.write_text(json.dumps({"format": "something/else"}))
    with pytest.raises(ValueError, match=f"{path}: not a nolabel.subset/1 subset file"):
        load_subset(path, y)


def test_save_validation(tmp_path):
    y = labels_of([4, 4])
    with pytest.raises(ValueError, match="duplicates"):
        save_subset(tmp_path / "a.json", torch.tensor([1, 1]), y)
    with pytest.raises(ValueError, match="lie in"):
        save_subset(tmp_path / "a.json", torch.tensor([8]), y)
    with pytest.raises(ValueError, match="meta"):
        save_subset(tmp_path / "a.json", torch.tensor([1]), y, meta={"bad": object()})
    assert not (tmp_path / "a.json").exists()


def test_fingerprint_depends_on_values_and_order():
    a = torch.tensor([0, 1, 2])
    assert labels_fingerprint(a) == labels_fingerprint([0, 1, 2]) == labels_fingerprint(a.int())
    assert labels_fingerprint(a) != labels_fingerprint(torch.tensor([0, 2, 1]))
    assert labels_fingerprint(a) != labels_fingerprint(torch.tensor([0, 1, 2, 0]))
