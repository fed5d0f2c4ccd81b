import math

import pytest
import torch

from nolabel.losses.hierarchical import (hierarchical_loss, hierarchical_loss_terms, split_super_class,
                                         super_class_targets)


def neg_log_softmax(logits, target):
    values = [v.item() for v in logits]
    top = max(values)
    return -(values[target] - top - math.log(sum(math.exp(v - top) for v in values)))


def naive_hierarchical_loss(super_logits, all_heads, super_targets, sub_targets):
    """Eq. 3.4 with a loop over samples and over the S heads weighted by y_ns."""
    batch, n_super = super_logits.shape
    total = 0.0
    for n in range(batch):
        y = int(super_targets[n])
        total += neg_log_softmax(super_logits[n], y)
        for s in range(n_super):
            y_ns = 1.0 if s == y else 0.0
            if y_ns:
                total += y_ns * neg_log_softmax(all_heads[s, n], int(sub_targets[n]))
    return total / batch


def random_case(batch, m, k, seed):
    g = torch.Generator().manual_seed(seed)
    n_super = 4 * m
    super_logits = torch.randn(batch, n_super, generator=g) * 3
    heads = torch.randn(n_super, batch, k, generator=g) * 3
    rotation = torch.randint(4, (batch,), generator=g)
    cluster = torch.randint(m, (batch,), generator=g)
    sub = torch.randint(k, (batch,), generator=g)
    return super_logits, heads, super_class_targets(rotation, cluster, m), sub


@pytest.mark.parametrize("batch,m,k", [(6, 2, 5), (1, 1, 3), (9, 4, 7)])
def test_matches_naive_loop_with_both_sub_logit_layouts(batch, m, k):
    super_logits, heads, y, z = random_case(batch, m, k, seed=batch * 100 + k)
    want = naive_hierarchical_loss(super_logits, heads, y, z)
    assert hierarchical_loss(super_logits, heads, y, z).item() == pytest.approx(want, rel=1e-5)
    own = torch.stack([heads[int(y[n]), n] for n in range(batch)])       # (B, k) selected by the caller
    assert hierarchical_loss(super_logits, own, y, z).item() == pytest.approx(want, rel=1e-5)


def test_terms_sum_to_the_loss_and_uniform_logits_give_log_s_plus_log_k():
    super_logits, heads, y, z = random_case(5, 3, 4, seed=1)
    sup, sub = hierarchical_loss_terms(super_logits, heads, y, z)
    assert (sup + sub).item() == pytest.approx(hierarchical_loss(super_logits, heads, y, z).item())
    sup, sub = hierarchical_loss_terms(torch.zeros(5, 12), torch.zeros(12, 5, 4), y, z)
    assert sup.item() == pytest.approx(math.log(12)) and sub.item() == pytest.approx(math.log(4))


def test_only_the_true_super_class_head_gets_gradient():
    super_logits, heads, y, z = random_case(4, 2, 6, seed=2)
    heads.requires_grad_(True)
    hierarchical_loss(super_logits, heads, y, z).backward()
    touched = heads.grad.abs().sum(-1) > 0                                  # (S, B)
    expected = torch.zeros(8, 4, dtype=torch.bool)
    expected[y, torch.arange(4)] = True
    assert torch.equal(touched, expected)


def test_padded_sub_classes_with_minus_inf_are_ignored():
    heads = torch.tensor([[[2.0, 1.0, float("-inf")]]])                    # (S=1, B=1, k=3), k_s = 2
    loss = hierarchical_loss(torch.zeros(1, 1), heads, torch.tensor([0]), torch.tensor([1]))
    assert loss.item() == pytest.approx(neg_log_softmax(torch.tensor([2.0, 1.0]), 1))


def test_super_class_targets_is_rotation_major_and_invertible():
    m = 3
    rotation = torch.arange(4).repeat_interleave(m)
    cluster = torch.arange(m).repeat(4)
    y = super_class_targets(rotation, cluster, m)
    assert torch.equal(y, torch.arange(12))
    r, c = split_super_class(y, m)
    assert torch.equal(r, rotation) and torch.equal(c, cluster)


def test_errors():
    with pytest.raises(ValueError, match="rotation labels"):
        super_class_targets(torch.tensor([4]), torch.tensor([0]), 2)
    with pytest.raises(ValueError, match="super_cluster labels"):
        super_class_targets(torch.tensor([0]), torch.tensor([2]), 2)
    with pytest.raises(ValueError, match="same shape"):
        super_class_targets(torch.tensor([0, 1]), torch.tensor([0]), 2)
    y, z = torch.tensor([0, 1]), torch.tensor([0, 0])
    with pytest.raises(ValueError, match=r"\(S, B, k\) must start"):
        hierarchical_loss(torch.zeros(2, 8), torch.zeros(4, 2, 3), y, z)
    with pytest.raises(ValueError, match=r"\(S, B, k\) or \(B, k\)"):
        hierarchical_loss(torch.zeros(2, 8), torch.zeros(3), y, z)
    with pytest.raises(ValueError, match="rows for a batch"):
        hierarchical_loss(torch.zeros(2, 8), torch.zeros(3, 3), y, z)
    with pytest.raises(ValueError, match="must both be"):
        hierarchical_loss(torch.zeros(2, 8), torch.zeros(2, 3), y, torch.tensor([0]))
