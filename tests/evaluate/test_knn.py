"""Weighted k-NN (thesis 5.3.2) against a naive loop written from the formula."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nolabel.evaluate.knn import knn_classify, knn_scores


def naive_scores(train, labels, test, k, t, c):
    """Loop over test samples: cosine to every train sample, sort, keep k, sum exp(sim/T) per class."""
    train = np.asarray(train, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    out = np.zeros((len(test), c))
    for i, q in enumerate(test):
        q = q / np.linalg.norm(q)
        sims = [(float(q @ x), j) for j, x in enumerate(train)]
        sims.sort(key=lambda p: -p[0])
        for sim, j in sims[:k]:
            out[i, int(labels[j])] += math.exp(sim / t)
    return out


def naive_accuracy(scores, targets, top):
    hits1 = hits5 = 0
    for s, y in zip(scores, targets):
        order = sorted(range(len(s)), key=lambda c: (-s[c], c))
        hits1 += order[0] == y
        hits5 += y in order[:top]
    return 100.0 * hits1 / len(targets), 100.0 * hits5 / len(targets)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    train = torch.randn(120, 16, generator=g)
    labels = torch.randint(0, 7, (120,), generator=g)
    test = torch.randn(30, 16, generator=g)
    targets = torch.randint(0, 7, (30,), generator=g)
    return train, labels, test, targets


@pytest.mark.parametrize("k,t", [(1, 0.07), (5, 0.07), (20, 0.07), (20, 0.5), (50, 1.0), (7, 0.02)])
def test_matches_naive(data, k, t):
    train, labels, test, targets = data
    got = knn_scores(train, labels, test, k=k, temperature=t)
    ref = naive_scores(train, labels, test, k, t, 7)
    assert got.shape == (30, 7)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-4, atol=1e-4)
    res = knn_classify(train, labels, test, targets, k=k, temperature=t)
    top1, top5 = naive_accuracy(ref, targets.tolist(), 5)
    assert res["top1"] == pytest.approx(top1) and res["top5"] == pytest.approx(top5)
    assert res == {**res, "k": k, "temperature": t, "n_train": 120, "n_test": 30}


def test_hand_made_case():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.1], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 0, 2])
    test = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    s = knn_scores(train, labels, test, k=2, temperature=1.0)
    cos_02 = 2.0 / math.hypot(2.0, 0.1)  # test 0 vs train 2
    cos_12 = 0.1 / math.hypot(2.0, 0.1)  # test 1 vs train 2
    expected = torch.tensor(
        [
            [math.e + math.exp(cos_02), 0.0, 0.0],  # neighbours: train 0 (sim 1), train 2; both class 0
            [math.exp(cos_12), math.e, 0.0],  # neighbours: train 1 (class 1, sim 1), train 2 (class 0)
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(s, expected, rtol=1e-5, atol=1e-5)
    res = knn_classify(train, labels, test, torch.tensor([0, 1]), k=2, temperature=1.0)
    assert res["top1"] == 100.0 and res["top5"] == 100.0


def test_k_larger_than_n(data):
    train, labels, test, targets = data
    small, small_y = train[:6], labels[:6]
    got = knn_scores(small, small_y, test, k=50, temperature=0.1, num_classes=7)
    ref = naive_scores(small, small_y, test, 6, 0.1, 7)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-4)
    assert knn_classify(small, small_y, test, targets, k=50)["k"] == 6


def test_fewer_than_five_classes():
    g = torch.Generator().manual_seed(1)
    train, test = torch.randn(40, 8, generator=g), torch.randn(10, 8, generator=g)
    labels, targets = torch.randint(0, 3, (40,), generator=g), torch.randint(0, 3, (10,), generator=g)
    res = knn_classify(train, labels, test, targets, k=10)
    assert res["top5"] == 100.0  # min(5, C) = 3 classes: every target is in the top 3
    assert knn_scores(train, labels, test).shape == (10, 3)
    assert knn_scores(train, labels, test, num_classes=9).shape == (10, 9)


def test_single_test_sample_and_chunking(data):
    train, labels, test, targets = data
    full = knn_scores(train, labels, test, k=10)
    torch.testing.assert_close(knn_scores(train, labels, test[3:4], k=10), full[3:4])
    torch.testing.assert_close(knn_scores(train, labels, test, k=10, chunk_size=3), full)
    assert knn_classify(train, labels, test, targets, chunk_size=3) == knn_classify(train, labels, test, targets)


def test_accepts_other_dtypes_and_unnormalised(data):
    train, labels, test, _ = data
    full = knn_scores(train, labels, test)
    scaled = knn_scores(train.double() * 3.0, labels, test.half().float() * 0.1)
    np.testing.assert_allclose(scaled.numpy(), knn_scores(train, labels, test.half().float()).numpy(), rtol=1e-4)
    assert full.dtype == torch.float64 and torch.isfinite(full).all()


def test_ties_go_to_lowest_class():
    train = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    labels = torch.tensor([2, 1])
    test = torch.tensor([[1.0, 0.0]])
    assert knn_classify(train, labels, test, torch.tensor([1]), k=2)["top1"] == 100.0
    assert knn_classify(train, labels, test, torch.tensor([2]), k=2)["top1"] == 0.0


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"train_feats": torch.zeros(0, 4)}, "empty"),
        ({"test_feats": torch.zeros(0, 4)}, "empty"),
        ({"train_labels": torch.tensor([0, -1, 1, 0, 1])}, "needs a label"),
        ({"train_labels": torch.tensor([0, 1])}, "shape"),
        ({"train_labels": torch.zeros(5)}, "integer"),
        ({"test_feats": torch.randn(3, 5)}, "dims differ"),
        ({"test_feats": torch.full((3, 4), float("nan"))}, "NaN"),
        ({"k": 0}, "k must"),
        ({"temperature": 0.0}, "temperature"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"num_classes": 1}, "num_classes"),
    ],
)
def test_validation(kwargs, match):
    args = {"train_feats": torch.randn(5, 4), "train_labels": torch.tensor([0, 1, 1, 0, 1]), "test_feats": torch.randn(3, 4)}
    args.update(kwargs)
    if "train_feats" in kwargs and kwargs["train_feats"].shape[0] == 0:
        args["train_labels"] = torch.zeros(0, dtype=torch.long)
    with pytest.raises(ValueError, match=match):
        knn_scores(**args)


def test_classify_validation():
    train, labels = torch.randn(5, 4), torch.tensor([0, 1, 1, 0, 1])
    with pytest.raises(ValueError, match="test_labels"):
        knn_classify(train, labels, torch.randn(3, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="needs a label"):
        knn_classify(train, labels, torch.randn(2, 4), torch.tensor([0, -1]))
