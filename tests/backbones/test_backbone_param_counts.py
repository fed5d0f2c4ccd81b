"""Default parameter counts (built on the meta device: no memory, no init cost, no forward).

Reference: torchvision's resnet18 / resnet50 have 11,689,512 / 25,557,032 parameters including
the 1000-way fc (512*1000+1000 = 513,000 / 2048*1000+1000 = 2,049,000), hence 11,176,512 /
23,508,032 without it. ViT-S/16 = 21.7M and ViT-B/16 = 85.8M (DINO, Table 5.1) at 224 px.
"""
from __future__ import annotations

import pytest
import torch

from nolabel.backbones import build_backbone

EXPECTED = {
    "resnet18": 11_689_512 - 513_000,
    "resnet50": 25_557_032 - 2_049_000,
    "vit_tiny": 5_524_416,
    "vit_small": 21_665_664,
    "vit_base": 85_798_656,
}


def count(name: str, **kwargs: object) -> int:
    with torch.device("meta"):
        model = build_backbone(name, image_size=224, **kwargs)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", list(EXPECTED))
def test_default_param_count(name):
    assert count(name) == EXPECTED[name]


def test_param_counts_rounded():
    assert round(count("resnet18") / 1e6, 1) == 11.2
    assert round(count("resnet50") / 1e6, 1) == 23.5
    assert round(count("vit_small") / 1e6, 1) == 21.7
    assert round(count("vit_base") / 1e6, 1) == 85.8


def test_small_stem_only_changes_the_first_conv():
    # 7x7x3x64 -> 3x3x3x64 weights
    assert count("resnet18") - count("resnet18", small_stem=True) == (49 - 9) * 3 * 64


def test_patch_size_changes_only_embeddings():
    # ViT-S/8 at 224: 8x8x3x384 patch weights, 1 + 28*28 positions
    expected = EXPECTED["vit_small"] - (16 * 16 - 8 * 8) * 3 * 384 + (28 * 28 - 14 * 14) * 384
    assert count("vit_small", patch_size=8) == expected
