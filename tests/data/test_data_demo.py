"""The generated demo dataset: determinism, splits, balance, masks, specs."""

from __future__ import annotations

import torch

from nolabel.data import generate_demo, open_source


def test_shapes_dtypes_and_balance() -> None:
    demo = generate_demo("train", n=205, size=24, seed=7)
    assert demo["images"].shape == (205, 3, 24, 24) and demo["images"].dtype == torch.uint8
    assert demo["labels"].shape == (205,) and demo["labels"].dtype == torch.int64
    assert demo["masks"].shape == (205, 24, 24) and demo["masks"].dtype == torch.bool
    assert len(demo["classes"]) == 10 and len(set(demo["classes"])) == 10
    counts = torch.bincount(demo["labels"], minlength=10)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 205
    assert not torch.equal(demo["labels"][:20].sort().values, demo["labels"][:20])  # shuffled


def test_deterministic_and_splits_differ() -> None:
    first = generate_demo("test", n=50)
    second = generate_demo("test", n=50)
    for key in ("images", "labels", "masks"):
        assert torch.equal(first[key], second[key])
    train = generate_demo("train", n=50)
    assert not torch.equal(train["images"], first["images"])
    other_seed = generate_demo("test", n=50, seed=1)
    assert not torch.equal(other_seed["images"], first["images"])


def test_masks_are_sized_and_inside_the_image() -> None:
    demo = generate_demo("test", n=100, size=32)
    masks = demo["masks"]
    area = masks.flatten(1).float().mean(1)
    assert (area > 0.02).all() and (area < 0.7).all()
    # the object never touches all four borders: it lies inside the image
    touches = (masks[:, 0].any(1) & masks[:, -1].any(1)
               & masks[:, :, 0].any(1) & masks[:, :, -1].any(1))
    assert not touches.any()


def test_colour_is_not_the_class() -> None:
    demo = generate_demo("train", n=400)
    images, masks, labels = demo["images"].float(), demo["masks"], demo["labels"]
    object_colour = (images * masks[:, None]).sum((2, 3)) / masks[:, None].sum((2, 3))
    per_class = torch.stack([object_colour[labels == c].mean(0) for c in range(10)])
    assert (per_class.std(0) < 25).all()  # class means of object colour are all alike


def test_demo_specs() -> None:
    source = open_source("demo:test?n=30&size=16&seed=2")
    assert len(source) == 30 and source.images.shape == (30, 3, 16, 16)
    assert source.masks.shape == (30, 16, 16) and source.classes is not None
    assert torch.equal(source.images, generate_demo("test", n=30, size=16, seed=2)["images"])
    assert len(open_source("demo?n=12")) == 12
