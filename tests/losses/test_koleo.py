"""KoLeo (Sablayrolles et al. 2019; DINOv2 sec. 4) against its formula written as a double loop."""
from __future__ import annotations

import math

import pytest
import torch

from nolabel.losses.koleo import koleo_loss


def naive_koleo(x, eps=1e-8):
    """-1/n sum_i log(min_{j != i} ||x_i/|x_i| - x_j/|x_j||| + eps), with loops."""
    rows = [[float(v) for v in r] for r in x]
    unit = [[v / math.sqrt(sum(u * u for u in r)) for v in r] for r in rows]
    total = 0.0
    for i, a in enumerate(unit):
        nearest = min(math.sqrt(sum((p - q) ** 2 for p, q in zip(a, b))) for j, b in enumerate(unit) if j != i)
        total += math.log(nearest + eps)
    return -total / len(unit)


@pytest.mark.parametrize("n,d", [(2, 3), (7, 5), (32, 16)])
def test_koleo_matches_the_double_loop(n, d):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(n)) * 3
    assert float(koleo_loss(x)) == pytest.approx(naive_koleo(x), rel=1e-5, abs=1e-6)


def test_views_are_regularised_separately_and_averaged():
    g = torch.Generator().manual_seed(0)
    views = torch.randn(2, 6, 4, generator=g)
    want = (naive_koleo(views[0]) + naive_koleo(views[1])) / 2
    assert float(koleo_loss(views)) == pytest.approx(want, rel=1e-5)
    # not one batch of 12: neighbours from the other view do not count
    assert float(koleo_loss(views)) != pytest.approx(naive_koleo(views.reshape(12, 4)), rel=1e-3)


def test_koleo_is_scale_invariant_and_lower_when_spread():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 8, generator=g)
    assert float(koleo_loss(x * 5)) == pytest.approx(float(koleo_loss(x)), rel=1e-5)
    clustered = torch.ones(16, 8) + 0.01 * torch.randn(16, 8, generator=g)
    assert float(koleo_loss(clustered)) > float(koleo_loss(x)) + 2.0


def test_koleo_gradient_pushes_nearest_neighbours_apart():
    x = torch.tensor([[1.0, 0.0], [0.995, 0.0998], [0.0, 1.0], [-1.0, 0.0]], requires_grad=True)
    loss = koleo_loss(x)
    loss.backward()
    assert torch.isfinite(x.grad).all()
    with torch.no_grad():
        apart = koleo_loss(x - 0.01 * x.grad)
    assert float(apart) < float(loss.detach())


def test_koleo_edge_cases():
    single = torch.randn(1, 4, requires_grad=True)
    loss = koleo_loss(single)
    assert float(loss.detach()) == 0.0 and loss.requires_grad
    same = torch.ones(3, 4)                                           # duplicates: distance 0, finite loss
    assert float(koleo_loss(same)) == pytest.approx(-math.log(1e-8), rel=1e-6)
    with pytest.raises(ValueError):
        koleo_loss(torch.randn(2, 3, 4, 5))
