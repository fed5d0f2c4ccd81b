import math

import pytest
import torch

from nolabel.losses.contrastive import info_nce, nt_xent


def cosine(u, v):
    """Cosine similarity of two 1-D tensors written out: u.v / (|u| |v|)."""
    dot = sum(u[i] * v[i] for i in range(len(u)))
    return dot / (torch.sqrt(sum(x * x for x in u)) * torch.sqrt(sum(x * x for x in v)))


def naive_nt_xent(z1, z2, tau):
    """SimCLR Eq. 1 with loops: 2N views, anchor a, positive the other view of the same
    image, denominator over every k != a; mean over anchors. Differentiable."""
    n = z1.shape[0]
    views = [z1[i] for i in range(n)] + [z2[i] for i in range(n)]
    total = 0.0
    for a in range(2 * n):
        positive = a + n if a < n else a - n
        num = torch.exp(cosine(views[a], views[positive]) / tau)
        den = sum(torch.exp(cosine(views[a], views[k]) / tau) for k in range(2 * n) if k != a)
        total = total - torch.log(num / den)
    return total / (2 * n)


def naive_info_nce(q, k, neg, tau):
    """MoCo Eq. 1 with loops: -log softmax of [q.k, q.n_1 .. q.n_M] at index 0, mean over queries."""
    total = 0.0
    for i in range(q.shape[0]):
        logits = [cosine(q[i], k[i]) / tau] + [cosine(q[i], neg[j]) / tau for j in range(neg.shape[0])]
        top = max(float(x.detach()) for x in logits)
        log_norm = top + torch.log(sum(torch.exp(x - top) for x in logits))
        total = total - (logits[0] - log_norm)
    return total / q.shape[0]


def leaf(*shape, seed, dtype=torch.float64, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=dtype) * scale).requires_grad_(True)


@pytest.mark.parametrize("n,d,tau", [(4, 3, 0.1), (2, 5, 0.5), (3, 1, 0.2), (5, 8, 1.0)])
def test_nt_xent_matches_naive_loops_value_and_gradient(n, d, tau):
    z1, z2 = leaf(n, d, seed=n), leaf(n, d, seed=100 + n, scale=3.0)
    got = nt_xent(z1, z2, tau)
    got.backward()
    g1, g2 = z1.grad.clone(), z2.grad.clone()
    z1.grad = z2.grad = None
    want = naive_nt_xent(z1, z2, tau)
    want.backward()
    assert got.item() == pytest.approx(want.item(), rel=1e-10, abs=1e-12)
    assert torch.allclose(g1, z1.grad, rtol=1e-8, atol=1e-12)
    assert torch.allclose(g2, z2.grad, rtol=1e-8, atol=1e-12)


def test_nt_xent_float32_matches_float64():
    z1, z2 = leaf(6, 4, seed=1), leaf(6, 4, seed=2)
    got = nt_xent(z1.detach().float(), z2.detach().float(), 0.1)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(nt_xent(z1, z2, 0.1).item(), rel=1e-5)


def test_nt_xent_batch_of_one_has_no_negative():
    z1, z2 = leaf(1, 4, seed=3), leaf(1, 4, seed=4)
    loss = nt_xent(z1, z2, 0.1)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.all(z1.grad == 0) and torch.all(z2.grad == 0)


def test_nt_xent_identical_views_closed_form():
    # orthonormal images, identical views: sim(a, p) = 1, the 2N-2 negatives have sim 0
    n, tau = 3, 0.5
    z = torch.eye(n, dtype=torch.float64) * 2.0
    want = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + (2 * n - 2)))
    assert nt_xent(z, z.clone(), tau).item() == pytest.approx(want, rel=1e-12)


def test_nt_xent_scale_invariant_and_half_precision_upcast():
    z1, z2 = torch.randn(4, 6), torch.randn(4, 6)
    ref = nt_xent(z1, z2, 0.2)
    assert nt_xent(z1 * 7.0, z2 * 0.01, 0.2).item() == pytest.approx(ref.item(), rel=1e-5)
    half = nt_xent(z1.half(), z2.bfloat16(), 0.2)
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(ref.item(), rel=2e-2)


def test_nt_xent_gradcheck():
    z1, z2 = leaf(3, 4, seed=5), leaf(3, 4, seed=6)
    assert torch.autograd.gradcheck(lambda a, b: nt_xent(a, b, 0.3), (z1, z2))


@pytest.mark.parametrize("shapes", [((4, 3), (4, 2)), ((4, 3), (3, 3)), ((4,), (4,)), ((0, 3), (0, 3))])
def test_nt_xent_rejects_bad_shapes(shapes):
    with pytest.raises(ValueError):
        nt_xent(torch.zeros(shapes[0]), torch.zeros(shapes[1]), 0.1)


def test_nt_xent_rejects_non_positive_temperature():
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(torch.randn(2, 3), torch.randn(2, 3), 0.0)


@pytest.mark.parametrize("n,m,d,tau", [(3, 5, 4, 0.2), (1, 2, 3, 0.07), (4, 1, 1, 0.5), (2, 7, 6, 1.0)])
def test_info_nce_matches_naive_loops_value_and_gradient(n, m, d, tau):
    q, k, neg = leaf(n, d, seed=n + m), leaf(n, d, seed=20 + n), leaf(m, d, seed=40 + m, scale=2.0)
    got = info_nce(q, k, neg, tau)
    got.backward()
    grad = q.grad.clone()
    q.grad = None
    want = naive_info_nce(q, k.detach(), neg.detach(), tau)
    want.backward()
    assert got.item() == pytest.approx(want.item(), rel=1e-10, abs=1e-12)
    assert torch.allclose(grad, q.grad, rtol=1e-8, atol=1e-12)


def test_info_nce_no_gradient_to_keys_or_queue():
    q, k, neg = leaf(3, 4, seed=1), leaf(3, 4, seed=2), leaf(6, 4, seed=3)
    info_nce(q, k, neg).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert k.grad is None and neg.grad is None


def test_info_nce_empty_queue_is_zero():
    q, k = leaf(4, 3, seed=7), leaf(4, 3, seed=8)
    loss = info_nce(q, k, torch.empty(0, 3, dtype=torch.float64))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(q.grad == 0)


def test_info_nce_identical_query_and_key_against_orthogonal_queue():
    tau = 0.2
    q = torch.tensor([[1.0, 0.0, 0.0]])
    neg = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 5.0]])
    want = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 2.0))
    assert info_nce(q, q.clone(), neg, tau).item() == pytest.approx(want, rel=1e-6)


def test_info_nce_default_temperature_is_moco_v2():
    q, k, neg = leaf(3, 4, seed=9), leaf(3, 4, seed=10), leaf(5, 4, seed=11)
    assert info_nce(q, k, neg).item() == pytest.approx(naive_info_nce(q, k, neg, 0.2).item(), rel=1e-10)


def test_info_nce_half_inputs_and_float32_queue():
    q, k, neg = torch.randn(4, 8), torch.randn(4, 8), torch.randn(16, 8)
    ref = info_nce(q, k, neg, 0.2)
    got = info_nce(q.half(), k.half(), neg, 0.2)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(ref.item(), rel=2e-2)


def test_info_nce_gradcheck():
    q, k, neg = leaf(2, 3, seed=12), leaf(2, 3, seed=13), leaf(4, 3, seed=14)
    assert torch.autograd.gradcheck(lambda a: info_nce(a, k, neg, 0.3), (q,))


@pytest.mark.parametrize("q_shape,k_shape,n_shape", [((3, 4), (3, 5), (2, 4)), ((3, 4), (3, 4), (2, 5)),
                                                    ((3, 4), (3, 4), (4,)), ((3, 4), (2, 4), (2, 4))])
def test_info_nce_rejects_bad_shapes(q_shape, k_shape, n_shape):
    with pytest.raises(ValueError):
        info_nce(torch.zeros(q_shape), torch.zeros(k_shape), torch.zeros(n_shape))
