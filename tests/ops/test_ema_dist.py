import copy

import torch
from torch import nn

from nolabel.ops import dist
from nolabel.ops.ema import ema_update


def test_ema_formula_per_parameter():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    teacher = copy.deepcopy(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in teacher.parameters()]
    ema_update(teacher, student, 0.9)
    for t0, t, s in zip(before, teacher.parameters(), student.parameters()):
        assert torch.allclose(t, 0.9 * t0 + 0.1 * s)


def test_ema_momentum_one_freezes_and_zero_copies():
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    w = b.weight.clone()
    ema_update(b, a, 1.0)
    assert torch.equal(b.weight, w)
    ema_update(b, a, 0.0)
    assert torch.equal(b.weight, a.weight)


def test_ema_leaves_buffers():
    s, t = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    s.running_mean.fill_(5.0)
    ema_update(t, s, 0.5)
    assert torch.equal(t.running_mean, torch.zeros(3))


def test_dist_helpers_are_identities_without_group():
    x = torch.arange(4.0)
    assert dist.world_size() == 1 and dist.rank() == 0 and dist.is_main()
    assert torch.equal(dist.all_reduce_mean(x.clone()), x)
    assert torch.equal(dist.all_reduce_sum(x.clone()), x)
    assert torch.equal(dist.all_gather(x), x)
    assert dist.all_gather_object({"a": 1}) == {"a": 1}
    dist.barrier()
