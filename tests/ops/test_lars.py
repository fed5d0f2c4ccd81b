import copy
import math

import pytest
import torch
from torch import nn

from nolabel.ops.lars import LARS, lars_groups
from nolabel.optim import param_groups, set_schedule_values


def two_by_two_layer():
    """Linear(2, 2) with w = diag(3, 4) (||w|| = 5), b = (1, 2), and gradients
    g_w = diag(0.6, 0.8) (||g_w|| = 1), g_b = (0.5, -0.5)."""
    layer = nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 4.0]]))
        layer.bias.copy_(torch.tensor([1.0, 2.0]))
    layer.weight.grad = torch.tensor([[0.6, 0.0], [0.0, 0.8]])
    layer.bias.grad = torch.tensor([0.5, -0.5])
    return layer


def test_one_step_against_hand_computation():
    layer = two_by_two_layer()
    opt = LARS(lars_groups(param_groups(layer.named_parameters()), weight_decay=0.1), lr=2.0, momentum=0.9, eta=0.001)
    opt.step()
    # weight: ratio = 0.001 * 5 / (1 + 0.1 * 5) = 1 / 300
    #         d = ratio * (g + 0.1 w) = (diag(0.6, 0.8) + diag(0.3, 0.4)) / 300 = diag(0.003, 0.004)
    #         w <- w - 2 d = diag(2.994, 3.992)   (first step: buffer = d)
    assert torch.allclose(layer.weight, torch.tensor([[2.994, 0.0], [0.0, 3.992]]), rtol=1e-6, atol=1e-7)
    # bias: no trust ratio, no decay: b <- b - 2 g = (0, 3)
    assert torch.allclose(layer.bias, torch.tensor([0.0, 3.0]))


def test_groups_exclude_biases_and_norms_from_adaptation_and_decay():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2), nn.LayerNorm(2))
    model[0].weight.requires_grad_(False)                               # frozen: left out
    groups = lars_groups(param_groups(model.named_parameters()), weight_decay=0.5)
    adapted, plain = groups
    assert adapted["lars"] and not adapted["no_decay"] and adapted["weight_decay"] == 0.5
    assert not plain["lars"] and plain["no_decay"] and plain["weight_decay"] == 0.0
    assert [id(p) for p in adapted["params"]] == [id(model[3].weight)]
    assert {id(p) for p in plain["params"]} == {id(p) for p in model.parameters() if p.ndim < 2}
    # zero gradients and a large decay: only the adapted weight shrinks; the flag wins even
    # when the loop writes a non-zero weight_decay into the excluded group
    opt = LARS(groups, lr=1.0, momentum=0.0)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    before = {name: p.clone() for name, p in model.named_parameters()}
    for group in opt.param_groups:
        group["weight_decay"] = 0.5
    opt.step()
    for name, p in model.named_parameters():
        if name == "3.weight":                                          # ||g|| = 0: ratio 1, w <- w - 0.5 w
            assert torch.allclose(p, 0.5 * before[name])
        else:
            assert torch.equal(p, before[name]), name


def test_only_biases_leave_the_weight_group_empty():
    groups = lars_groups(param_groups(nn.LayerNorm(3).named_parameters()), weight_decay=0.1)
    assert [len(g["params"]) for g in groups] == [0, 2] and groups[1]["no_decay"] and not groups[1]["lars"]


def test_momentum_over_two_steps_with_changing_lr_and_decay():
    """Two steps of a (1, 2) weight, lr and weight decay rewritten between steps as the
    training loop does; expected values from the formula with Python floats."""
    p = nn.Parameter(torch.tensor([[3.0, 4.0]]))
    opt = LARS([{"params": [p]}], lr=0.5, momentum=0.9, weight_decay=0.01, eta=0.02)
    eta, m = 0.02, 0.9

    def direction(w, g, wd):
        wn, gn = math.hypot(*w), math.hypot(*g)
        ratio = eta * wn / (gn + wd * wn + 1e-8)
        return [ratio * (gi + wd * wi) for gi, wi in zip(g, w)]

    w, g1, g2 = [3.0, 4.0], [1.0, -2.0], [-0.5, 0.25]
    buf = direction(w, g1, 0.01)
    w = [wi - 0.5 * bi for wi, bi in zip(w, buf)]
    p.grad = torch.tensor([g1])
    opt.step()
    assert torch.allclose(p.detach().double(), torch.tensor([w], dtype=torch.float64), rtol=1e-6)

    set_schedule_values(opt, lr=0.25, weight_decay=0.2)
    d = direction(w, g2, 0.2)
    buf = [m * bi + di for bi, di in zip(buf, d)]
    w = [wi - 0.25 * bi for wi, bi in zip(w, buf)]
    p.grad = torch.tensor([g2])
    opt.step()
    assert torch.allclose(p.detach().double(), torch.tensor([w], dtype=torch.float64), rtol=1e-6)
    assert torch.allclose(opt.state[p]["momentum_buffer"].double(), torch.tensor([buf], dtype=torch.float64),
                          rtol=1e-6)


def test_zero_weight_uses_ratio_one():
    p = nn.Parameter(torch.zeros(2, 2))
    p.grad = torch.ones(2, 2)
    LARS([p], lr=0.1, momentum=0.9, weight_decay=0.1).step()
    assert torch.allclose(p, torch.full((2, 2), -0.1))


def run_steps(model, opt, steps, seed):
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        set_schedule_values(opt, lr=1.0 / (step + 1), weight_decay=1e-3 * (step + 1))
        opt.zero_grad()
        x = torch.randn(8, 4, generator=g)
        model(x).pow(2).mean().backward()
        opt.step()


def test_state_dict_round_trip_resumes_exactly():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.ReLU(), nn.Linear(6, 3))
    opt = LARS(lars_groups(param_groups(model.named_parameters()), 1e-3), lr=1.0, momentum=0.9)
    run_steps(model, opt, 2, seed=1)
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    run_steps(model, opt, 2, seed=2)                                    # uninterrupted run

    resumed = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.ReLU(), nn.Linear(6, 3))
    resumed.load_state_dict(saved_model)
    resumed_opt = LARS(lars_groups(param_groups(resumed.named_parameters()), 0.0), lr=0.0, momentum=0.5)    # overwritten by the load
    resumed_opt.load_state_dict(saved_opt)
    assert resumed_opt.param_groups[0]["momentum"] == 0.9 and not resumed_opt.param_groups[1]["lars"]
    run_steps(resumed, resumed_opt, 2, seed=2)
    for a, b in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kwargs,message", [
    ({"lr": -1.0}, "learning rate"),
    ({"lr": 0.1, "momentum": 1.0}, "momentum"),
    ({"lr": 0.1, "weight_decay": -1.0}, "weight_decay"),
    ({"lr": 0.1, "eta": 0.0}, "eta"),
])
def test_bad_hyperparameters_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LARS([nn.Parameter(torch.ones(2, 2))], **kwargs)
