"""Tiny models and data shared by the protocol tests: exported 1-block ViT and 1/8-width
ResNet-18 (built, not trained: the protocols only need a network), 64 demo images."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from nolabel.backbones import build_backbone
from nolabel.checkpoint import export_backbone
from nolabel.evaluate.context import EvalContext

TRAIN, TEST = "demo?n=64", "demo:test?n=32"


def export(path, name, seed=0, **kwargs):
    torch.manual_seed(seed)
    export_backbone(build_backbone(name, image_size=32, **kwargs), path, {"image_size": 32})
    return str(path)


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory):
    return export(tmp_path_factory.mktemp("vit"), "vit_tiny", patch_size=8, depth=1, embed_dim=32, num_heads=2)


@pytest.fixture(scope="session")
def tiny_resnet(tmp_path_factory):
    return export(tmp_path_factory.mktemp("resnet"), "resnet18", width=0.125)


@pytest.fixture(scope="session")
def flat_folder(tmp_path_factory):
    """An unlabelled folder of 12 random 32 px PNGs."""
    root = tmp_path_factory.mktemp("flat")
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / f"img{i}.png")
    return str(root)


@pytest.fixture(scope="module")
def vit_ctx(tiny_vit, tmp_path_factory):
    return EvalContext(tiny_vit, TRAIN, TEST, out=tmp_path_factory.mktemp("out"), progress=False)


@pytest.fixture(scope="module")
def resnet_ctx(tiny_resnet, tmp_path_factory):
    return EvalContext(tiny_resnet, TRAIN, TEST, out=tmp_path_factory.mktemp("out"), progress=False)
