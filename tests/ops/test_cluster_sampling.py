import numpy as np
import pytest
import torch

from nolabel.ops.cluster_sampling import inverse_size_weights, uniform_cluster_sampler


def unbalanced():
    """Clusters 0, 2, 5, 7 of sizes 1, 10, 100, 1000 (k = 8: 1, 3, 4, 6 are empty), shuffled."""
    labels = np.concatenate([np.full(size, c) for c, size in [(0, 1), (2, 10), (5, 100), (7, 1000)]])
    return torch.from_numpy(np.random.default_rng(0).permutation(labels))


def test_cluster_frequencies_are_uniform_despite_unbalanced_sizes():
    labels = unbalanced()
    idx = uniform_cluster_sampler(labels, 40000, seed=1)
    assert idx.shape == (40000,) and idx.dtype == torch.int64
    counts = np.bincount(labels[idx].numpy(), minlength=8)
    assert (counts[[1, 3, 4, 6]] == 0).all()                              # empty clusters never drawn
    assert np.allclose(counts[[0, 2, 5, 7]] / 40000, 0.25, atol=0.015)


def test_images_are_uniform_within_a_cluster():
    labels = unbalanced()
    idx = uniform_cluster_sampler(labels, 40000, seed=2).numpy()
    members = np.flatnonzero(labels.numpy() == 2)                         # 10 images, ~1000 draws each
    per_image = np.array([(idx == i).sum() for i in members])
    assert per_image.sum() == pytest.approx(10000, rel=0.05)
    assert np.allclose(per_image / per_image.sum(), 0.1, atol=0.02)


def test_sampler_is_a_function_of_the_seed():
    labels = unbalanced().numpy()                                           # arrays work too
    a, b = uniform_cluster_sampler(labels, 100, seed=3), uniform_cluster_sampler(labels, 100, seed=3)
    assert torch.equal(a, b)
    assert not torch.equal(a, uniform_cluster_sampler(labels, 100, seed=4))
    assert uniform_cluster_sampler(labels, 0).shape == (0,)


def test_inverse_size_weights_give_every_non_empty_cluster_the_same_total():
    labels = unbalanced()
    w = inverse_size_weights(labels, 8)
    assert w.shape == (8,) and w.dtype == torch.float32
    assert (w[[1, 3, 4, 6]] == 0).all()
    sizes = torch.bincount(labels, minlength=8).float()
    totals = (w * sizes)[[0, 2, 5, 7]]
    assert torch.allclose(totals, torch.full((4,), 1111 / 4))
    assert w[labels].mean().item() == pytest.approx(1.0)
    assert w[0].item() == pytest.approx(1111 / (4 * 1))


def test_errors():
    with pytest.raises(ValueError, match=r"\(N,\)"):
        uniform_cluster_sampler(torch.zeros(2, 2, dtype=torch.int64), 3)
    with pytest.raises(ValueError, match="non-negative integer"):
        uniform_cluster_sampler(torch.tensor([0, -1]), 3)
    with pytest.raises(ValueError, match="non-negative integer"):
        inverse_size_weights(torch.tensor([0.5, 1.0]), 2)
    with pytest.raises(ValueError, match="empty set"):
        uniform_cluster_sampler(torch.zeros(0, dtype=torch.int64), 3)
    with pytest.raises(ValueError, match="n_samples"):
        uniform_cluster_sampler(torch.tensor([0, 1]), -1)
    with pytest.raises(ValueError, match="cluster 3 but k=3"):
        inverse_size_weights(torch.tensor([0, 3]), 3)
