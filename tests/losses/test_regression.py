import math

import pytest
import torch

from nolabel.losses.regression import negative_cosine, normalized_mse


def naive_negative_cosine(p, z):
    """SimSiam D(p, z) = -mean_i p_i.z_i / (|p_i| |z_i|), loops over rows and coordinates."""
    total = 0.0
    for i in range(len(p)):
        dot = sum(p[i][j] * z[i][j] for j in range(len(p[i])))
        norm_p = math.sqrt(sum(x * x for x in p[i]))
        norm_z = math.sqrt(sum(x * x for x in z[i]))
        total += -dot / (norm_p * norm_z)
    return total / len(p)


def naive_normalized_mse(p, z):
    """BYOL Eq. 2: mean_i || p_i/|p_i| - z_i/|z_i| ||^2, loops."""
    total = 0.0
    for i in range(len(p)):
        norm_p = math.sqrt(sum(x * x for x in p[i]))
        norm_z = math.sqrt(sum(x * x for x in z[i]))
        total += sum((p[i][j] / norm_p - z[i][j] / norm_z) ** 2 for j in range(len(p[i])))
    return total / len(p)


def pair(n, d, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(n, d, generator=g, dtype=dtype).requires_grad_(True)
    z = (torch.randn(n, d, generator=g, dtype=dtype) * 4).requires_grad_(True)
    return p, z


@pytest.mark.parametrize("n,d", [(1, 4), (2, 3), (5, 1), (7, 16)])
@pytest.mark.parametrize("loss,naive", [(negative_cosine, naive_negative_cosine),
                                        (normalized_mse, naive_normalized_mse)])
def test_matches_naive_loops(loss, naive, n, d):
    p, z = pair(n, d, seed=n * 31 + d)
    got = loss(p, z)
    want = naive(p.tolist(), z.tolist())
    assert got.item() == pytest.approx(want, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("loss", [negative_cosine, normalized_mse])
def test_gradient_to_prediction_only(loss):
    p, z = pair(4, 5, seed=1)
    loss(p, z).backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert z.grad is None


def test_negative_cosine_gradient_closed_form():
    # d/dp of -cos(p, z) / N = -(z_hat - cos * p_hat) / (N |p|)
    p, z = pair(3, 4, seed=2)
    negative_cosine(p, z).backward()
    with torch.no_grad():
        p_hat, z_hat = p / p.norm(dim=1, keepdim=True), z / z.norm(dim=1, keepdim=True)
        cos = (p_hat * z_hat).sum(dim=1, keepdim=True)
        want = -(z_hat - cos * p_hat) / (3 * p.norm(dim=1, keepdim=True))
    assert torch.allclose(p.grad, want, rtol=1e-10, atol=1e-12)


def test_identical_and_opposite_views():
    x = torch.randn(3, 5)
    assert negative_cosine(x, x * 2.5).item() == pytest.approx(-1.0, abs=1e-6)
    assert normalized_mse(x, x * 2.5).item() == pytest.approx(0.0, abs=1e-6)
    assert negative_cosine(x, -x).item() == pytest.approx(1.0, abs=1e-6)
    assert normalized_mse(x, -x).item() == pytest.approx(4.0, abs=1e-5)


def test_byol_is_affine_in_simsiam():
    p, z = pair(6, 7, seed=3)
    assert normalized_mse(p, z).item() == pytest.approx(2 + 2 * negative_cosine(p, z).item(), rel=1e-12)


def test_half_precision_inputs_computed_in_float32():
    p, z = torch.randn(4, 8), torch.randn(4, 8)
    for loss in (negative_cosine, normalized_mse):
        got = loss(p.half(), z.bfloat16())
        assert got.dtype == torch.float32
        assert got.item() == pytest.approx(loss(p, z).item(), abs=2e-2)


@pytest.mark.parametrize("loss", [negative_cosine, normalized_mse])
def test_gradcheck(loss):
    p, z = pair(3, 4, seed=4)
    assert torch.autograd.gradcheck(lambda a: loss(a, z), (p,))


@pytest.mark.parametrize("loss", [negative_cosine, normalized_mse])
@pytest.mark.parametrize("shapes", [((3, 4), (3, 5)), ((3, 4), (2, 4)), ((4,), (4,)), ((0, 4), (0, 4))])
def test_rejects_bad_shapes(loss, shapes):
    with pytest.raises(ValueError):
        loss(torch.zeros(shapes[0]), torch.zeros(shapes[1]))
