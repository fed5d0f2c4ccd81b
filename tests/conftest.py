"""Exported untrained backbones shared by the evaluation and the `nolabel embed /
neighbors / duplicates` tests (built, not trained: what they test needs a network)."""
from __future__ import annotations

import pytest
import torch

from nolabel.backbones import build_backbone
from nolabel.runs import export_backbone


def export(path, name, seed=0, image_size=32, **kwargs):
    """``name`` built with ``seed`` for ``image_size`` px and exported into ``path``."""
    torch.manual_seed(seed)
    export_backbone(build_backbone(name, image_size=image_size, **kwargs), path, {"image_size": image_size})
    return str(path)


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory):
    """Untrained 1-block ViT, patch 8, exported for 32 px."""
    return export(tmp_path_factory.mktemp("vit"), "vit_tiny", patch_size=8, depth=1, embed_dim=32, num_heads=2)


@pytest.fixture(scope="session")
def tiny_resnet(tmp_path_factory):
    """Untrained 1/8-width ResNet-18, exported for 32 px."""
    return export(tmp_path_factory.mktemp("resnet"), "resnet18", width=0.125)
