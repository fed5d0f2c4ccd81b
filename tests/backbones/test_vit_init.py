"""ViT and DINO-head initialisation: DINO's reference ``trunc_normal_(std=.02)`` has absolute
bounds +-2 (100 std), so the weights are in effect normal with std 0.02, not a normal
truncated at 2 std (whose std is 0.0176 and which never exceeds 0.04)."""
from __future__ import annotations

import torch
from torch import nn

from nolabel.backbones import build_backbone
from nolabel.backbones.vit import trunc_normal_
from nolabel.heads import DINOHead

STD = 0.02
# a plain normal puts 2 * (1 - Phi(2)) = 4.55% of its values beyond 2 std
BEYOND_2_STD = 0.0455


def check_plain_normal(values: torch.Tensor, std: float = STD) -> None:
    """values look like draws of N(0, std^2): std within 2%, and the tails beyond 2 std present."""
    values = values.flatten().double()
    assert abs(values.std().item() / std - 1) < 0.02, values.std().item()
    beyond = (values.abs() > 2 * std).double().mean().item()
    assert 0.8 * BEYOND_2_STD < beyond < 1.2 * BEYOND_2_STD, beyond


def test_trunc_normal_default_is_in_effect_a_plain_normal():
    torch.manual_seed(0)
    layer = nn.Linear(1024, 1024)
    trunc_normal_(layer.weight)
    check_plain_normal(layer.weight.detach())
    assert layer.weight.abs().max() > 2 * STD


def test_two_std_truncation_is_one_argument_away():
    torch.manual_seed(0)
    w = trunc_normal_(torch.empty(1024, 1024), bound=2 * STD)
    assert w.abs().max() <= 2 * STD
    assert abs(w.std().item() - 0.0176) < 0.0004           # 0.88 std: what the default avoids


def test_every_vit_weight_initialised_by_the_reference_rule():
    torch.manual_seed(0)
    model = build_backbone("vit_small", image_size=32, depth=2)
    linears = torch.cat([m.weight.detach().flatten() for m in model.modules() if isinstance(m, nn.Linear)])
    check_plain_normal(linears)
    # pos embed (1 + 64 rows) and CLS token together: 65 x 384 draws
    check_plain_normal(torch.cat([model.pos_embed.detach().flatten(), model.cls_token.detach().flatten()]))
    for m in model.modules():
        if isinstance(m, nn.Linear):
            assert m.weight.abs().max() > 2 * STD         # no 2-std truncation in any layer


def test_dino_head_mlp_same_rule():
    torch.manual_seed(0)
    head = DINOHead(256, out_dim=64, hidden_dim=1024, bottleneck_dim=256)
    weights = torch.cat([m.weight.detach().flatten() for m in head.mlp.modules() if isinstance(m, nn.Linear)])
    check_plain_normal(weights)
