"""Registry: names, error messages for bad names / options, spec round trip, is_vit."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from nolabel.backbones import (
    ResNet,
    VisionTransformer,
    backbone_names,
    backbone_options,
    build_backbone,
    is_vit,
)

# Small but complete configs of every registered name (same architecture family, few FLOPs).
TINY = {
    "resnet18": {"width": 0.25},
    "resnet50": {"width": 0.125},
    "vit_tiny": {"depth": 2},
    "vit_small": {"depth": 2},
    "vit_base": {"depth": 1},
}


def test_names_in_order():
    assert backbone_names() == ["resnet18", "resnet50", "vit_tiny", "vit_small", "vit_base"]


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        build_backbone("resnet19", image_size=32)
    msg = str(err.value)
    assert "resnet19" in msg
    for name in backbone_names():
        assert name in msg


@pytest.mark.parametrize("name", ["resnet18", "vit_tiny"])
def test_unknown_option_names_it_and_valid_ones(name):
    with pytest.raises(ValueError) as err:
        build_backbone(name, image_size=32, widht=2.0)
    msg = str(err.value)
    assert "widht" in msg and name in msg
    for option in backbone_options(name):
        assert option in msg


def test_options():
    assert backbone_options("resnet50") == ["width", "small_stem", "zero_init_residual", "sobel"]
    assert backbone_options("vit_small") == [
        "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "drop_path_rate", "sobel",
    ]  # fmt: skip


@pytest.mark.parametrize("name", backbone_names())
def test_spec_round_trip(name):
    torch.manual_seed(0)
    model = build_backbone(name, image_size=32, **TINY.get(name, {})).eval()
    spec = json.loads(json.dumps(model.spec))  # plain JSON-able values
    assert spec["name"] == name and spec["image_size"] == 32
    twin = build_backbone(**spec).eval()
    assert twin.spec == model.spec
    twin.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), twin(x))


def test_spec_records_resolved_defaults():
    assert build_backbone("vit_tiny", image_size=64, depth=1).spec["patch_size"] == 8
    assert build_backbone("resnet18", image_size=32, width=0.125).spec["small_stem"] is True
    assert build_backbone("resnet18", image_size=96, width=0.125).spec["small_stem"] is False


def test_is_vit():
    vit = build_backbone("vit_tiny", image_size=32, depth=1)
    res = build_backbone("resnet18", image_size=32, width=0.125)
    assert is_vit(vit) and isinstance(vit, VisionTransformer)
    assert not is_vit(res) and isinstance(res, ResNet)
    assert not is_vit(nn.Sequential())

    class Wrapper(nn.Module):  # DDP-like
        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module

    assert is_vit(Wrapper(vit)) and not is_vit(Wrapper(res))
