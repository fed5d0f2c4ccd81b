import math

import torch

from nolabel.ops.pooling import gem_pool


def naive_gem(tokens, p):
    """Explicit loops over Python floats: for every (b, d), the mean over tokens n of
    max(x, 1e-6)^p, then to the power 1/p."""
    batch, n, dim = tokens.shape
    return torch.tensor([[(math.fsum(max(tokens[b, i, d].item(), 1e-6) ** p for i in range(n)) / n) ** (1 / p)
                          for d in range(dim)] for b in range(batch)], dtype=torch.float64)


def test_gem_matches_the_naive_formula():
    torch.manual_seed(0)
    tokens = torch.randn(3, 5, 4)                    # negative values too: clamped to 1e-6
    torch.testing.assert_close(gem_pool(tokens).double(), naive_gem(tokens, 3), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gem_pool(tokens.double(), p=3), naive_gem(tokens, 3))
    assert gem_pool(tokens).shape == (3, 4)


def test_gem_p1_is_the_mean_of_positive_values_and_large_p_nears_the_max():
    x = torch.rand(2, 7, 3) + 0.1
    torch.testing.assert_close(gem_pool(x, p=1), x.mean(1))
    assert torch.allclose(gem_pool(x.double(), p=200), x.double().amax(1), rtol=2e-2)
