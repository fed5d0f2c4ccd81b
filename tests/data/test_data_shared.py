"""The real CIFAR-10 archive kept beside the repository (skipped where absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nolabel.data import open_images

SHARED = (Path(__file__).resolve().parents[2] / "../shared/datasets").resolve()
CIFAR_TEST = SHARED / "cifar10" / "test.tar.gz"


@pytest.mark.skipif(not CIFAR_TEST.is_file(),
                    reason=f"shared dataset {CIFAR_TEST} not present on this machine")
def test_shared_cifar10_test_archive() -> None:
    image_set = open_images(str(CIFAR_TEST), in_memory=False, progress=False)
    assert len(image_set) == 10_000 and image_set.image_size == 32
    assert image_set.classes == ["airplane", "automobile", "bird", "cat", "deer",
                                 "dog", "frog", "horse", "ship", "truck"]
    labels = image_set.labels_tensor()
    assert torch.bincount(labels).tolist() == [1000] * 10
    batch = next(image_set.batches(256, shuffle=True, seed=0))
    assert batch.images.shape == (256, 3, 32, 32) and batch.bad == []
    assert 40 < batch.images.float().mean() < 200
