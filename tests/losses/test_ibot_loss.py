"""iBOT's masked-patch self-distillation (Zhou et al. 2022, sec. 3.1) against a naive loop
over the masked positions."""
from __future__ import annotations

import math

import pytest
import torch

from nolabel.losses.dino import masked_patch_loss, teacher_entropy, updated_center


def naive_patch_loss(student, teacher, mask, center, tt, ts):
    """For each view and image: the mean over its masked patches of -sum_k q_k log p_k, with
    explicit softmaxes; images without masked patches count 0; the mean over images and views."""
    views, batch, n, k = teacher.shape
    total = 0.0
    for v in range(views):
        for b in range(batch):
            losses = []
            for i in range(n):
                if not mask[v, b, i]:
                    continue
                zt = [(float(teacher[v, b, i, j]) - float(center[j])) / tt for j in range(k)]
                et = [math.exp(z - max(zt)) for z in zt]
                q = [e / sum(et) for e in et]
                zs = [float(student[v, b, i, j]) / ts for j in range(k)]
                log_norm = max(zs) + math.log(sum(math.exp(z - max(zs)) for z in zs))
                losses.append(-sum(q[j] * (zs[j] - log_norm) for j in range(k)))
            total += sum(losses) / len(losses) if losses else 0.0
    return total / (views * batch)


@pytest.mark.parametrize("views,batch,n,k", [(2, 3, 5, 4), (1, 2, 9, 6), (2, 1, 4, 3)])
def test_masked_patch_loss_matches_a_loop_over_masked_positions(views, batch, n, k):
    g = torch.Generator().manual_seed(views * 100 + n)
    student = torch.randn(views, batch, n, k, generator=g) * 3
    teacher = torch.randn(views, batch, n, k, generator=g) * 3
    center = torch.randn(k, generator=g)
    mask = torch.rand(views, batch, n, generator=g) < 0.4
    mask[0, 0] = False                                               # an image with nothing masked
    mask[-1, -1, 0] = True
    got = masked_patch_loss(student[mask], teacher, mask, center, teacher_temp=0.04, student_temp=0.1)
    assert float(got) == pytest.approx(naive_patch_loss(student, teacher, mask, center, 0.04, 0.1), rel=1e-5)


def test_only_masked_positions_count_and_get_gradients():
    g = torch.Generator().manual_seed(3)
    student = torch.randn(2, 2, 6, 5, generator=g, requires_grad=True)
    teacher = torch.randn(2, 2, 6, 5, generator=g)
    mask = torch.zeros(2, 2, 6, dtype=torch.bool)
    mask[0, 1, [2, 3]] = True
    mask[1, 0, 5] = True
    center = torch.zeros(5)
    base = masked_patch_loss(student[mask], teacher, mask, center, 0.07)
    other = teacher.clone()
    other[~mask] = torch.randn(int((~mask).sum()), 5, generator=g)   # teacher at unmasked patches: irrelevant
    assert torch.equal(masked_patch_loss(student[mask], other, mask, center, 0.07), base)
    other[1, 0, 5] = -other[1, 0, 5]                                  # a masked position: matters
    assert not torch.allclose(masked_patch_loss(student[mask], other, mask, center, 0.07), base)
    base.backward()
    assert (student.grad[~mask] == 0).all() and (student.grad[mask] != 0).all()


def test_nothing_masked_gives_zero_and_shapes_are_checked():
    teacher = torch.randn(2, 3, 4, 5)
    none = torch.zeros(2, 3, 4, dtype=torch.bool)
    assert float(masked_patch_loss(torch.zeros(0, 5), teacher, none, torch.zeros(5), 0.04)) == 0.0
    some = none.clone()
    some[0, 0, 0] = True
    with pytest.raises(ValueError, match="one row"):
        masked_patch_loss(torch.zeros(2, 5), teacher, some, torch.zeros(5), 0.04)
    with pytest.raises(ValueError, match="V, B, N, K"):
        masked_patch_loss(torch.zeros(1, 5), teacher[0], some[0], torch.zeros(5), 0.04)


def test_center_and_entropy_take_patch_outputs():
    teacher = torch.randn(2, 3, 4, 5)
    center = torch.randn(5)
    want = 0.9 * center + 0.1 * teacher.reshape(-1, 5).mean(0)
    torch.testing.assert_close(updated_center(center, teacher, 0.9), want)
    flat = teacher.reshape(2, 12, 5)
    assert float(teacher_entropy(teacher, center, 0.04)) == pytest.approx(float(teacher_entropy(flat, center, 0.04)), rel=1e-6)
