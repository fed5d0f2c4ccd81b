"""Models and collections shared by the tests of ``nolabel embed / neighbors / duplicates``.

``trained_model``: a 1/8-width ResNet-18 (small stem, 16 px) trained *with the labels* of
1,000 demo images for 500 steps (~10 s on one CPU thread), exported. A self-supervised run
cannot learn the demo shapes within a test's budget (tiny SimCLR runs of 32-160 steps stayed
at chance, 10-15% k-NN; the demo needs ~775 steps at batch 128, BENCHMARKS.md), and the
neighbour test needs a backbone whose features are known to group the classes: it checks the
search and the row -> path -> label bookkeeping, not a training method. Measured: 92% of the
10 neighbours of the 30 held-out demo images of the test share their class (86% over 200),
against 14% for a random initialisation of the same network.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from nolabel.backbones import build_backbone
from nolabel.runs import export_backbone
from nolabel.data import generate_demo, open_images
from nolabel.views import normalize
from tests.conftest import export

SIZE = 16
BANK = f"demo?n=1000&size={SIZE}"


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        network = build_backbone("resnet18", image_size=SIZE, width=0.125, small_stem=True)
        head = torch.nn.Linear(network.num_features, 10)
        data = open_images(BANK, progress=False)
        images, labels = next(data.batches(len(data), shuffle=False, drop_last=False)).images, data.labels_tensor()
        steps, batch = 500, 32
        optimizer = torch.optim.AdamW([*network.parameters(), *head.parameters()], lr=1e-2, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=steps)
        generator = torch.Generator().manual_seed(0)
        for step in range(steps):
            idx = torch.randint(0, len(images), (batch,), generator=generator)
            x = images[idx].flip(-1) if step % 2 else images[idx]
            loss = F.cross_entropy(head(network(normalize(x))), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    finally:
        torch.set_num_threads(threads)
    out = tmp_path_factory.mktemp("trained")
    export_backbone(network.eval(), out, {"image_size": SIZE})
    return str(out)


@pytest.fixture(scope="session")
def random_resnet(tmp_path_factory):
    """Untrained ResNet-18 (small stem), exported for 32 px: its features tell planted
    copies from distinct demo images (measured in ``test_duplicates``)."""
    return export(tmp_path_factory.mktemp("resnet"), "resnet18", small_stem=True)


def save_demo(folder, split: str, n: int, size: int, seed: int = 0, by_class: bool = False) -> list:
    """Write demo images as PNG files (root/<class>/i.png with ``by_class``); returns the paths."""
    demo = generate_demo(split, n=n, size=size, seed=seed)
    paths = []
    for i, (image, label) in enumerate(zip(demo["images"], demo["labels"].tolist())):
        where = folder / demo["classes"][label] if by_class else folder
        where.mkdir(parents=True, exist_ok=True)
        paths.append(where / f"{i:04d}.png")
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(paths[-1])
    return paths


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """Feature cache in tmp_path, also as the default (no test writes to ~/.cache)."""
    path = tmp_path / "cache"
    monkeypatch.setenv("NOLABEL_CACHE", str(path))
    return path


def random_unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)
