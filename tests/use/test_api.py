"""The Python API: ``nolabel.load_backbone``, ``nolabel.embed``, ``nolabel.neighbors``,
``nolabel.duplicates`` on specs, files, tensors and modules, returning plain tensors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import nolabel
from nolabel.config import apply_overrides, new_config
from nolabel.data import open_source
from nolabel.use.errors import UseError
from tests.train.conftest import TINY
from tests.use.conftest import save_demo


def test_embed_gives_the_same_rows_for_a_spec_a_tensor_files_and_a_module(tiny_vit, tmp_path, cache_dir):
    x, paths = nolabel.embed(tiny_vit, "demo?n=12", return_paths=True)
    assert isinstance(x, torch.Tensor) and x.shape == (12, 32) and paths[0] == "demo:train#0"
    images = open_source("demo?n=12").images                                  # uint8 (12, 3, 32, 32)
    torch.testing.assert_close(nolabel.embed(tiny_vit, images), x, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(nolabel.embed(nolabel.load_backbone(tiny_vit), images[3]), x[3:4],
                               rtol=1e-4, atol=1e-5)
    files = save_demo(tmp_path / "photos", "train", 12, 32)
    torch.testing.assert_close(nolabel.embed(tiny_vit, [str(f) for f in files]), x, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(nolabel.embed(tiny_vit, files[5]), x[5:6], rtol=1e-4, atol=1e-5)
    listing = tmp_path / "photos" / "picked.txt"                              # a list file is a collection
    listing.write_text("".join(f"{f.name}\n" for f in files[2:5]))
    torch.testing.assert_close(nolabel.embed(tiny_vit, str(listing)), x[2:5], rtol=1e-4, atol=1e-5)
    assert nolabel.embed(tiny_vit, "demo?n=12", pca=3).shape == (12, 3)
    assert any(cache_dir.iterdir())                                          # specs go through the cache


def test_neighbors_and_duplicates_return_plain_arrays(tiny_vit, cache_dir):
    images = open_source("demo?n=30").images
    sims, idx = nolabel.neighbors(tiny_vit, images[[7, 2]], "demo?n=30", k=4)
    assert sims.shape == idx.shape == (2, 4) and idx.dtype == torch.int64
    assert idx[:, 0].tolist() == [7, 2] and torch.allclose(sims[:, 0], torch.ones(2), atol=1e-5)
    sims_t, idx_t, paths = nolabel.neighbors(tiny_vit, images[[7, 2]], images, k=4, return_paths=True)
    assert torch.equal(idx_t, idx) and paths[0] == "data#0"
    planted = torch.cat([images, images[[4]]])                                 # an exact copy
    for threshold in (0.9999, 1.0):                                            # 1.0: linked by its bytes
        groups = nolabel.duplicates(tiny_vit, planted, threshold=threshold)
        assert [g.tolist() for g in groups] == [[4, 30]] and isinstance(groups[0], np.ndarray)


def test_load_backbone_reads_a_run_folder_too(tmp_path):
    from nolabel.train import train

    cfg = new_config("dino")
    apply_overrides(cfg, TINY + ["--run.epochs=1", f"--run.out={tmp_path / 'run'}"])
    train(cfg)
    network = nolabel.load_backbone(tmp_path / "run")
    assert not network.training and network.spec["name"] == "vit_tiny"
    x = nolabel.embed(network, open_source("demo?n=4").images)
    torch.testing.assert_close(x, nolabel.embed(str(tmp_path / "run"), "demo?n=4", use_cache=False),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("call,words", [
    (lambda m: nolabel.embed(m, torch.rand(2, 3, 32, 32)), ["images", "torch.float32", "uint8"]),
    (lambda m: nolabel.embed(m, torch.zeros(2, 3, 32, 24, dtype=torch.uint8)), ["images", "not square"]),
    (lambda m: nolabel.embed(m, 42), ["images", "got a int"]),
    (lambda m: nolabel.embed(m, "demo?n=4", image_size=20), ["image_size 20", "patch size 8"]),
    (lambda m: nolabel.neighbors(m, "/no/such.png", "demo?n=4"), ["query /no/such.png", "does not exist"]),
    (lambda m: nolabel.duplicates(m, "demo?n=4", threshold=2), ["threshold 2", "[-1, 1]"]),
    (lambda m: nolabel.embed(m, "demo?n=4", pca=0), ["pca 0"]),
])
def test_bad_api_input_names_the_argument(tiny_vit, cache_dir, call, words):
    with pytest.raises(UseError) as caught:
        call(tiny_vit)
    for word in words:
        assert word in str(caught.value), (word, str(caught.value))
