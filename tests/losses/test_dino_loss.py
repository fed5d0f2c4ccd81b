import math

import pytest
import torch

from nolabel.losses.dino import dino_loss, entropy_and_kl, teacher_probs, updated_center


def naive_dino_loss(student, teacher, center, tt, ts):
    """Eq. 5.3 written with loops: every (teacher global view, other student view) pair,
    every sample, explicit softmaxes."""
    n_s, batch, k = student.shape
    n_t = teacher.shape[0]
    total, pairs = 0.0, 0
    for t in range(n_t):
        for s in range(n_s):
            if s == t and n_s > 1:
                continue
            pair = 0.0
            for b in range(batch):
                zt = [(teacher[t, b, i].item() - center[i].item()) / tt for i in range(k)]
                mt = max(zt)
                et = [math.exp(z - mt) for z in zt]
                q = [e / sum(et) for e in et]
                zs = [student[s, b, i].item() / ts for i in range(k)]
                ms = max(zs)
                log_norm = ms + math.log(sum(math.exp(z - ms) for z in zs))
                pair += -sum(q[i] * (zs[i] - log_norm) for i in range(k))
            total += pair / batch
            pairs += 1
    return total / pairs


@pytest.mark.parametrize("n_s,n_t,batch,k", [(2, 2, 3, 5), (8, 2, 2, 7), (3, 2, 1, 4), (1, 1, 2, 3)])
def test_dino_loss_matches_naive_loops(n_s, n_t, batch, k):
    g = torch.Generator().manual_seed(n_s * 10 + k)
    student = torch.randn(n_s, batch, k, generator=g) * 3
    teacher = torch.randn(n_t, batch, k, generator=g) * 3
    center = torch.randn(k, generator=g)
    got = dino_loss(student, teacher, center, teacher_temp=0.04, student_temp=0.1)
    want = naive_dino_loss(student, teacher, center, 0.04, 0.1)
    assert got.item() == pytest.approx(want, rel=1e-5, abs=1e-5)


def test_gradient_flows_to_student_only():
    student = torch.randn(4, 3, 6, requires_grad=True)
    teacher = torch.randn(2, 3, 6, requires_grad=True)
    dino_loss(student, teacher, torch.zeros(6), 0.04, 0.1).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_no_overflow_with_huge_logits():
    student = torch.tensor([[[1e4, -1e4, 0.0]], [[-1e4, 1e4, 0.0]]])
    teacher = student.clone()
    loss = dino_loss(student, teacher, torch.zeros(3), 0.04, 0.1)
    assert torch.isfinite(loss)


def test_uniform_outputs_give_log_k():
    k = 16
    out = torch.zeros(4, 5, k)
    loss = dino_loss(out, out[:2], torch.zeros(k), 0.04, 0.1)
    assert loss.item() == pytest.approx(math.log(k), rel=1e-6)


def test_more_teacher_than_student_views_rejected():
    with pytest.raises(ValueError):
        dino_loss(torch.zeros(1, 2, 3), torch.zeros(2, 2, 3), torch.zeros(3), 0.04, 0.1)


def test_center_update_is_ema_of_batch_mean():
    teacher = torch.arange(12.0).reshape(2, 2, 3)           # mean over 4 rows: [4.5, 5.5, 6.5]
    c = updated_center(torch.ones(3), teacher, momentum=0.9)
    assert torch.allclose(c, 0.9 * torch.ones(3) + 0.1 * torch.tensor([4.5, 5.5, 6.5]))


def test_entropy_plus_kl_is_cross_entropy():
    g = torch.Generator().manual_seed(0)
    student, teacher, center = torch.randn(4, 3, 8, generator=g), torch.randn(2, 3, 8, generator=g), torch.zeros(8)
    h, kl = entropy_and_kl(student, teacher, center, 0.07, 0.1)
    q = teacher_probs(teacher, center, 0.07)
    assert h == pytest.approx(float(-(q * q.log()).sum(-1).mean()), rel=1e-5)
    assert h + kl == pytest.approx(dino_loss(student, teacher, center, 0.07, 0.1).item(), rel=1e-5)
    assert kl >= -1e-6
