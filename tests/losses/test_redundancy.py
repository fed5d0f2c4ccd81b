import math

import pytest
import torch

from nolabel.losses.redundancy import barlow_twins_loss, vicreg_loss


def column(z, j):
    return [z[b, j] for b in range(z.shape[0])]


def mean(xs):
    return sum(xs) / len(xs)


def naive_barlow(za, zb, lambd, eps=0.0):
    """Barlow Twins Eqs. 1-2 with loops: C_ij = sum_b a_bi b_bj / (sqrt(sum_b a_bi^2) sqrt(sum_b b_bj^2))
    over batch-centred embeddings (a Pearson correlation); with eps > 0 each sum of
    squares / N gets + eps (the regularised std). Differentiable."""
    n, d = za.shape
    ca = [[x - mean(column(za, i)) for x in column(za, i)] for i in range(d)]      # centred columns
    cb = [[x - mean(column(zb, j)) for x in column(zb, j)] for j in range(d)]
    loss = 0.0
    for i in range(d):
        for j in range(d):
            num = sum(x * y for x, y in zip(ca[i], cb[j]))
            std_i = torch.sqrt(sum(x * x for x in ca[i]) / n + eps)
            std_j = torch.sqrt(sum(y * y for y in cb[j]) / n + eps)
            c_ij = num / n / (std_i * std_j)
            loss = loss + ((1 - c_ij) ** 2 if i == j else lambd * c_ij ** 2)
    return loss


def naive_vicreg(za, zb, sim_w, var_w, cov_w, eps, gamma):
    """VICReg Eqs. 1-6 with loops (invariance as the mean over N*D entries, Algorithm 1)."""
    n, d = za.shape
    inv = sum((za[b, j] - zb[b, j]) ** 2 for b in range(n) for j in range(d)) / (n * d)

    def variance(z):
        total = 0.0
        for j in range(d):
            col = column(z, j)
            var = sum((x - mean(col)) ** 2 for x in col) / (n - 1)
            total = total + torch.clamp(gamma - torch.sqrt(var + eps), min=0)
        return total / d

    def covariance(z):
        total = 0.0
        for i in range(d):
            for j in range(d):
                if i != j:
                    ci, cj = column(z, i), column(z, j)
                    cov = sum((x - mean(ci)) * (y - mean(cj)) for x, y in zip(ci, cj)) / (n - 1)
                    total = total + cov ** 2
        return total / d

    var, cov = variance(za) + variance(zb), covariance(za) + covariance(zb)
    return sim_w * inv + var_w * var + cov_w * cov, inv, var, cov


def views(n, d, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    za = torch.randn(n, d, generator=g, dtype=dtype)
    zb = (za + 0.5 * torch.randn(n, d, generator=g, dtype=dtype)) * 0.3 + 1.0
    return za.requires_grad_(True), zb.requires_grad_(True)


def grads_of(fn, za, zb):
    za.grad = zb.grad = None
    out = fn(za, zb)
    out.backward()
    return out.item(), za.grad.clone(), zb.grad.clone()


@pytest.mark.parametrize("n,d", [(2, 1), (2, 3), (5, 4), (8, 6)])
def test_barlow_matches_naive_loops_value_and_gradient(n, d):
    za, zb = views(n, d, seed=n * 10 + d)
    got, ga, gb = grads_of(lambda a, b: barlow_twins_loss(a, b, lambd=0.3, eps=0.0), za, zb)
    want, wa, wb = grads_of(lambda a, b: naive_barlow(a, b, 0.3), za, zb)
    assert got == pytest.approx(want, rel=1e-10, abs=1e-12)
    assert torch.allclose(ga, wa, rtol=1e-7, atol=1e-10) and torch.allclose(gb, wb, rtol=1e-7, atol=1e-10)


def test_barlow_default_eps_and_lambda():
    za, zb = views(16, 5, seed=1)
    got = barlow_twins_loss(za, zb)                                   # lambd 5e-3, eps 1e-5
    assert got.item() == pytest.approx(naive_barlow(za, zb, 5e-3, eps=1e-5).item(), rel=1e-10)
    assert got.item() == pytest.approx(naive_barlow(za, zb, 5e-3).item(), rel=1e-2)      # eps is small


def test_barlow_identical_views_leave_only_redundancy():
    za, _ = views(6, 4, seed=2)
    z = za.detach()
    corr = torch.corrcoef(z.T)
    want = 5e-3 * (corr.pow(2).sum() - corr.diagonal().pow(2).sum())
    assert barlow_twins_loss(z, z.clone(), eps=0.0).item() == pytest.approx(want.item(), rel=1e-10)
    assert barlow_twins_loss(z[:, :1], z[:, :1].clone(), eps=0.0).item() == pytest.approx(0.0, abs=1e-12)


def test_barlow_invariant_to_per_dimension_affine_maps():
    za, zb = views(10, 3, seed=3)
    scale, shift = torch.tensor([0.1, 5.0, 30.0], dtype=za.dtype), torch.tensor([3.0, -1.0, 0.0], dtype=za.dtype)
    ref = barlow_twins_loss(za, zb, eps=0.0).item()
    assert barlow_twins_loss(za * scale + shift, zb / scale - shift, eps=0.0).item() == pytest.approx(ref, rel=1e-9)


def test_barlow_constant_dimension_is_finite():
    z = torch.randn(8, 3)
    z[:, 1] = 2.0
    loss = barlow_twins_loss(z, z.clone())
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(1.0 + 5e-3 * 2 * float(torch.corrcoef(z[:, [0, 2]].T)[0, 1] ** 2), rel=1e-3)


def test_barlow_gradcheck_and_half_precision():
    za, zb = views(4, 3, seed=4)
    assert torch.autograd.gradcheck(lambda a, b: barlow_twins_loss(a, b, lambd=0.1), (za, zb))
    a, b = za.detach().float(), zb.detach().float()
    half = barlow_twins_loss(a.half(), b.half())
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(barlow_twins_loss(a, b).item(), rel=2e-2)


@pytest.mark.parametrize("loss", [barlow_twins_loss, vicreg_loss])
@pytest.mark.parametrize("shapes", [((4, 3), (4, 2)), ((4, 3), (3, 3)), ((4,), (4,)), ((4, 0), (4, 0))])
def test_rejects_bad_shapes(loss, shapes):
    with pytest.raises(ValueError):
        loss(torch.zeros(shapes[0]), torch.zeros(shapes[1]))


@pytest.mark.parametrize("loss", [barlow_twins_loss, vicreg_loss])
def test_batch_of_one_rejected(loss):
    with pytest.raises(ValueError, match="at least 2 samples"):
        loss(torch.randn(1, 4), torch.randn(1, 4))


@pytest.mark.parametrize("n,d", [(2, 1), (2, 3), (5, 4), (8, 6)])
def test_vicreg_matches_naive_loops_value_terms_and_gradient(n, d):
    za, zb = views(n, d, seed=n * 7 + d)
    weights = dict(sim_weight=2.0, var_weight=3.0, cov_weight=5.0, eps=1e-4, gamma=1.0)
    loss, terms = vicreg_loss(za, zb, **weights)
    loss.backward()
    ga, gb = za.grad.clone(), zb.grad.clone()
    za.grad = zb.grad = None
    want, inv, var, cov = naive_vicreg(za, zb, 2.0, 3.0, 5.0, 1e-4, 1.0)
    want.backward()
    assert loss.item() == pytest.approx(want.item(), rel=1e-10)
    assert terms["invariance"].item() == pytest.approx(inv.item(), rel=1e-10)
    assert terms["variance"].item() == pytest.approx(var.item(), rel=1e-10, abs=1e-12)
    assert terms["covariance"].item() == pytest.approx(float(cov.detach()) if torch.is_tensor(cov) else cov, rel=1e-10, abs=1e-12)
    assert torch.allclose(ga, za.grad, rtol=1e-8, atol=1e-12) and torch.allclose(gb, zb.grad, rtol=1e-8, atol=1e-12)


def test_vicreg_defaults_and_terms_recombine():
    za, zb = views(9, 5, seed=5)
    loss, terms = vicreg_loss(za, zb)
    want = naive_vicreg(za, zb, 25.0, 25.0, 1.0, 1e-4, 1.0)[0]
    assert loss.item() == pytest.approx(want.item(), rel=1e-10)
    recombined = 25 * terms["invariance"] + 25 * terms["variance"] + terms["covariance"]
    assert loss.item() == pytest.approx(recombined.item(), rel=1e-12)
    assert all(not t.requires_grad for t in terms.values())


def test_vicreg_collapse_and_spread_limits():
    collapsed = torch.ones(6, 4)
    loss, terms = vicreg_loss(collapsed, collapsed.clone())
    assert terms["invariance"].item() == 0.0 and terms["covariance"].item() == 0.0
    assert terms["variance"].item() == pytest.approx(2 * (1 - math.sqrt(1e-4)), rel=1e-6)
    spread = torch.randn(64, 1) * 10                                  # D = 1: no covariance, std >> gamma
    loss, terms = vicreg_loss(spread, spread.clone())
    assert loss.item() == 0.0


def test_vicreg_gradcheck_and_half_precision():
    za, zb = views(4, 3, seed=6)
    assert torch.autograd.gradcheck(lambda a, b: vicreg_loss(a, b)[0], (za, zb))
    a, b = za.detach().float(), zb.detach().float()
    half, _ = vicreg_loss(a.half(), b.half())
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(vicreg_loss(a, b)[0].item(), rel=2e-2)


def test_barlow_twins_terms_are_the_two_sums_of_the_loss():
    """One cross-correlation gives both sums Barlow Twins logs (on- and off-diagonal), and the
    loss is their weighted sum: no second correlation is needed for the logs."""
    from nolabel.losses.redundancy import barlow_twins_terms
    torch.manual_seed(0)
    z1, z2 = torch.randn(12, 6), torch.randn(12, 6)
    on, off = barlow_twins_terms(z1, z2)
    torch.testing.assert_close(on, barlow_twins_loss(z1, z2, 0.0))
    torch.testing.assert_close(on + 0.3 * off, barlow_twins_loss(z1, z2, 0.3))
