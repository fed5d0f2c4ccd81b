"""Data shared by the protocol tests: 64 demo images (the exported tiny ViT and ResNet
fixtures are in tests/conftest.py)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from nolabel.evaluate.context import EvalContext

TRAIN, TEST = "demo?n=64", "demo:test?n=32"


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
