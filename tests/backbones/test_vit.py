"""ViT: attributes, patch-size rule, CLS output, input checks, stochastic depth, init."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from nolabel.backbones import build_backbone
from nolabel.backbones.vit import default_patch_size
from nolabel.backbones.vit_layers import DropPath


def tiny_vit(**kwargs):
    torch.manual_seed(0)
    config = {"depth": 2} | kwargs
    return build_backbone("vit_tiny", image_size=32, **config).eval()


@pytest.mark.parametrize(("size", "patch"), [(16, 4), (32, 4), (48, 8), (64, 8), (96, 16), (224, 16)])
def test_default_patch_size(size, patch):
    assert default_patch_size(size) == patch


def test_attributes():
    model = build_backbone("vit_small", image_size=32, depth=1)
    assert (model.patch_size, model.embed_dim, model.num_heads, model.num_features) == (4, 384, 6, 384)
    assert model.grid_size == (8, 8)
    assert model.pos_embed.shape == (1, 1 + 64, 384)
    override = build_backbone("vit_tiny", image_size=32, patch_size=8, embed_dim=64, num_heads=2, depth=3, mlp_ratio=2.0)
    assert (override.patch_size, override.embed_dim, override.num_heads, len(override.blocks)) == (8, 64, 2, 3)
    assert override.blocks[0].mlp.fc1.out_features == 128


def test_forward_is_cls_token():
    model = tiny_vit()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        tokens = model.forward_tokens(x)
        assert tokens.shape == (3, 1 + 64, 192)
        torch.testing.assert_close(tokens[:, 0], model(x), rtol=0, atol=0)


def test_final_norm_applied():
    model = tiny_vit()
    with torch.no_grad():
        tokens = model.forward_tokens(torch.randn(2, 3, 32, 32))
    # LayerNorm with weight 1 / bias 0 at init: zero mean, unit variance per token
    torch.testing.assert_close(tokens.mean(-1), torch.zeros(2, 65), atol=1e-5, rtol=0)
    torch.testing.assert_close(tokens.var(-1, unbiased=False), torch.ones(2, 65), atol=1e-3, rtol=0)


@pytest.mark.parametrize("shape", [(1, 3, 30, 32), (1, 3, 32, 34), (3, 32, 32)])
def test_bad_input_size(shape):
    with pytest.raises(ValueError):
        tiny_vit()(torch.randn(*shape))


@pytest.mark.parametrize(
    "kwargs", [{"patch_size": 5}, {"embed_dim": 100, "num_heads": 3}, {"depth": 0}, {"drop_path_rate": 1.0}]
)
def test_bad_config(kwargs):
    with pytest.raises(ValueError):
        build_backbone("vit_tiny", image_size=32, **kwargs)


def test_drop_path_schedule_and_behaviour():
    model = tiny_vit(depth=5, drop_path_rate=0.2)
    rates = [block.drop_path.drop_prob for block in model.blocks]
    assert rates == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # eval: deterministic
        drop = DropPath(0.5).train()
        y = drop(torch.ones(1000, 3))
        kept = y[:, 0] != 0
        assert torch.all(y[kept] == 2.0) and torch.all(y[~kept] == 0.0)  # whole samples, rescaled
        assert 350 < int(kept.sum()) < 650


def test_init():
    model = build_backbone("vit_small", image_size=32, depth=2)
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0) and m.eps == 1e-6
        if isinstance(m, nn.Linear):
            assert torch.all(m.bias == 0)
            assert m.weight.abs().max() <= 2.0          # the reference's bounds: +-2, absolute
            assert 0.018 < m.weight.std() < 0.022       # std 0.02, not the 0.0176 of a 2-std truncation
    for p in (model.pos_embed, model.cls_token):
        assert p.abs().max() <= 2.0 and p.abs().max() > 0
        assert 0.015 < p.std() < 0.025
