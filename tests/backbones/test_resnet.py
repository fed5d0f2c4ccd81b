"""ResNet: stem rule and map sizes, width, zero-init residual, pooling."""
from __future__ import annotations

import pytest
import torch

from nolabel.backbones import build_backbone
from nolabel.backbones.resnet import resolve_small_stem
from nolabel.backbones.resnet_blocks import BasicBlock, Bottleneck


@pytest.mark.parametrize(
    ("image_size", "small_stem", "expected"),
    [(32, None, True), (64, None, True), (65, None, False), (224, None, False),
     (32, False, False), (224, True, True)],
)  # fmt: skip
def test_small_stem_rule(image_size, small_stem, expected):
    assert resolve_small_stem(small_stem, image_size) is expected
    model = build_backbone("resnet18", image_size=image_size, width=0.125, small_stem=small_stem)
    assert model.small_stem is expected
    assert model.conv1.kernel_size == ((3, 3) if expected else (7, 7))


@pytest.mark.parametrize(
    ("name", "small_stem", "size", "grid"),
    [("resnet18", None, 32, 4), ("resnet50", None, 32, 4), ("resnet18", False, 32, 1),
     ("resnet18", None, 64, 8), ("resnet18", False, 224, 7)],
)  # fmt: skip
def test_map_size(name, small_stem, size, grid):
    model = build_backbone(name, image_size=size, width=0.125, small_stem=small_stem).eval()
    with torch.no_grad():
        maps = model.forward_maps(torch.randn(1, 3, size, size))
    assert maps.shape == (1, model.num_features, grid, grid)


def test_forward_is_pooled_maps():
    model = build_backbone("resnet18", image_size=32, width=0.25).eval()
    x = torch.randn(2, 3, 32, 48)  # non-square works too
    with torch.no_grad():
        maps = model.forward_maps(x)
        assert maps.shape == (2, 128, 4, 6)
        torch.testing.assert_close(model(x), maps.mean(dim=(2, 3)))


@pytest.mark.parametrize(("name", "width", "features"), [("resnet18", 0.5, 256), ("resnet50", 0.25, 512), ("resnet18", 1, 512)])
def test_width(name, width, features):
    with torch.device("meta"):
        model = build_backbone(name, image_size=32, width=width)
    assert model.num_features == features
    assert model.conv1.out_channels == int(64 * width)


def test_zero_init_residual():
    for name in ("resnet18", "resnet50"):
        model = build_backbone(name, image_size=32, width=0.125, zero_init_residual=True)
        blocks = [m for m in model.modules() if isinstance(m, (BasicBlock, Bottleneck))]
        assert len(blocks) == (8 if name == "resnet18" else 16)
        assert all(torch.all(b.last_bn.weight == 0) for b in blocks)
        # every block starts as relu(shortcut(x))
        block = blocks[0].eval()
        x = torch.randn(1, block.conv1.in_channels, 4, 4)
        with torch.no_grad():
            torch.testing.assert_close(block(x), torch.relu(block.shortcut(x)))
    default = build_backbone("resnet18", image_size=32, width=0.125)
    assert all(torch.all(m.weight == 1) for m in default.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_bad_width():
    with pytest.raises(ValueError, match="width"):
        build_backbone("resnet18", image_size=32, width=0.0)
