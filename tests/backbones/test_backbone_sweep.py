"""Every registered backbone: output shape, finite values, gradients down to the first layer."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from nolabel.backbones import backbone_names, build_backbone, is_vit

# Reduced widths / depths where the full model is slow on CPU; everything else at full size.
SMALL = {"resnet50": {"width": 0.25}, "vit_small": {"depth": 4}, "vit_base": {"depth": 1}}


def first_layer(model: nn.Module) -> nn.Conv2d:
    """The conv that sees the pixels."""
    return model.patch_embed if is_vit(model) else model.conv1


@pytest.mark.parametrize("name", backbone_names())
def test_forward_backward(name):
    torch.manual_seed(0)
    model = build_backbone(name, image_size=32, **SMALL.get(name, {}))
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, model.num_features)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    grad = first_layer(model).weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"


@pytest.mark.parametrize("name", backbone_names())
def test_num_features_matches_spec_family(name):
    with torch.device("meta"):  # no init cost
        model = build_backbone(name, image_size=32)
    if is_vit(model):
        assert model.num_features == model.embed_dim == model.spec["embed_dim"]
    else:
        assert model.num_features in (int(512 * model.spec["width"]), int(2048 * model.spec["width"]))
