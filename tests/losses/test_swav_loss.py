import math

import pytest
import torch

from nolabel.losses.swav import normalize_prototypes_, swav_loss
from nolabel.ops.sinkhorn import sinkhorn_knopp


def naive_swav_loss(scores, codes, temperature):
    """Eq. 4.6 with loops over (code view c, other view v != c, sample, prototype):
    -sum_k q_c^(k) log softmax(z_v / T)^(k), averaged over samples, then over pairs."""
    n_views, batch, k = scores.shape
    total, pairs = 0.0, 0
    for c in range(codes.shape[0]):
        for v in range(n_views):
            if v == c:
                continue
            pair = 0.0
            for b in range(batch):
                z = [scores[v, b, i].item() / temperature for i in range(k)]
                m = max(z)
                log_norm = m + math.log(sum(math.exp(zi - m) for zi in z))
                pair += -sum(codes[c, b, i].item() * (z[i] - log_norm) for i in range(k))
            total += pair / batch
            pairs += 1
    return total / pairs


def random_codes(n_code_views, batch, k, g):
    return torch.softmax(torch.randn(n_code_views, batch, k, generator=g) * 3, dim=-1)


@pytest.mark.parametrize("n_views,n_code_views,batch,k", [
    (2, 2, 4, 5),      # two global views, no local views
    (8, 2, 3, 7),      # 2 global + 6 local views (multi-crop, section 4.2.4)
    (4, 2, 1, 6),      # batch of one
    (3, 1, 2, 3),      # a single code view
    (2, 1, 5, 1),      # one prototype: the loss is 0
])
def test_swav_loss_matches_naive_loops(n_views, n_code_views, batch, k):
    g = torch.Generator().manual_seed(n_views * 100 + batch * 10 + k)
    scores = torch.randn(n_views, batch, k, generator=g)
    codes = random_codes(n_code_views, batch, k, g)
    got = swav_loss(scores, codes, temperature=0.1)
    want = naive_swav_loss(scores, codes, 0.1)
    assert got.dim() == 0 and got.dtype == torch.float32
    assert got.item() == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_with_sinkhorn_codes_and_default_temperature():
    g = torch.Generator().manual_seed(0)
    scores = torch.nn.functional.normalize(torch.randn(6, 8, 4, generator=g), dim=-1) @ \
        torch.nn.functional.normalize(torch.randn(4, 10, generator=g), dim=0)       # (V, B, K) cosine-like
    codes = torch.stack([sinkhorn_knopp(scores[c]) for c in range(2)])
    assert swav_loss(scores, codes).item() == pytest.approx(naive_swav_loss(scores, codes, 0.1), rel=1e-5)


def test_gradient_flows_to_scores_only():
    scores = torch.randn(4, 3, 6, requires_grad=True)
    codes = torch.softmax(torch.randn(2, 3, 6), dim=-1).requires_grad_()
    swav_loss(scores, codes).backward()
    assert scores.grad is not None and scores.grad.abs().sum() > 0
    assert codes.grad is None


def test_half_scores_are_computed_in_float32():
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(3, 4, 5, generator=g)
    codes = random_codes(2, 4, 5, g)
    half = swav_loss(scores.half(), codes.half())
    assert half.dtype == torch.float32 and torch.isfinite(half)
    assert half.item() == pytest.approx(swav_loss(scores.half().float(), codes.half().float()).item(), rel=1e-6)


def test_uniform_codes_and_scores_give_log_k():
    k = 16
    loss = swav_loss(torch.zeros(5, 3, k), torch.full((2, 3, k), 1 / k))
    assert loss.item() == pytest.approx(math.log(k), rel=1e-6)


def test_huge_scores_stay_finite():
    scores = torch.tensor([[[1e4, -1e4, 0.0]], [[-1e4, 1e4, 0.0]]])
    codes = torch.tensor([[[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]]])
    assert torch.isfinite(swav_loss(scores, codes))


@pytest.mark.parametrize("scores,codes,message", [
    (torch.zeros(2, 3), torch.zeros(2, 3), "views, batch, K"),
    (torch.zeros(1, 3, 4), torch.zeros(1, 3, 4), "at least 2 views"),
    (torch.zeros(2, 3, 4), torch.zeros(3, 3, 4), "code views"),
    (torch.zeros(2, 3, 4), torch.zeros(1, 2, 4), "do not match"),
    (torch.zeros(2, 3, 4), torch.zeros(1, 3, 5), "do not match"),
])
def test_bad_shapes_raise(scores, codes, message):
    with pytest.raises(ValueError, match=message):
        swav_loss(scores, codes)


def test_normalize_prototypes_in_place_without_gradient():
    layer = torch.nn.Linear(4, 7, bias=False)                      # weight (K=7, D=4): one prototype per row
    with torch.no_grad():
        layer.weight.mul_(5.0)
    storage = layer.weight.data_ptr()
    out = normalize_prototypes_(layer.weight)
    assert out is layer.weight and layer.weight.data_ptr() == storage
    assert torch.allclose(layer.weight.norm(dim=1), torch.ones(7))
    assert layer.weight.grad_fn is None and layer.weight.requires_grad
    with pytest.raises(ValueError, match="K, D"):
        normalize_prototypes_(torch.zeros(3))
