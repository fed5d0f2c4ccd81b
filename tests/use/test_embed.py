"""``nolabel embed``: rows against features computed directly, paths and labels, unreadable
files skipped and listed, the feature cache, PCA against scikit-learn, parquet."""
from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest
import torch

import nolabel.use.collection as collection_module
from nolabel.cli import main
from nolabel.data import open_images
from nolabel.evaluate.models import load_model
from nolabel.use.embed import pca
from nolabel.use.errors import UseError
from tests.use.conftest import save_demo


def direct_features(model_spec: str, data_spec: str) -> tuple[np.ndarray, list[str]]:
    """Features of every readable image, computed here without the use/ package."""
    model = load_model(model_spec)
    data = open_images(data_spec, image_size=model.image_size, progress=False)
    feats, keys = [], []
    for batch in data.batches(7, shuffle=False, drop_last=False):
        feats.append(model.features(batch.images))
        keys += [data.keys[i] for i in batch.index.tolist()]
    return torch.cat(feats).numpy(), keys


def test_embeddings_rows_paths_and_labels(tiny_vit, tmp_path, cache_dir, capsys):
    out = tmp_path / "emb" / "demo.npy"
    assert main(["embed", tiny_vit, "--data", "demo?n=24", "--out", str(out), "--batch-size", "5"]) == 0
    x = np.load(out)
    rows = list(csv.DictReader(open(tmp_path / "emb" / "demo.csv")))
    want, keys = direct_features(tiny_vit, "demo?n=24")
    assert x.dtype == np.float32 and x.shape == want.shape == (24, 32)
    np.testing.assert_allclose(x, want, rtol=1e-4, atol=1e-5)
    assert [r["path"] for r in rows] == keys and [int(r["row"]) for r in rows] == list(range(24))
    from nolabel.data import open_source
    source = open_source("demo?n=24")
    assert [r["label"] for r in rows] == [source.classes[y] for y in source.labels]
    summary = json.loads((tmp_path / "emb" / "demo.json").read_text())
    assert summary["n_images"] == 24 and summary["dim"] == 32 and summary["pca"] is None
    assert "24 embeddings of 32 dimensions" in capsys.readouterr().out


def test_unreadable_files_are_skipped_and_listed(tiny_vit, tmp_path, cache_dir, capsys):
    folder = tmp_path / "photos"
    save_demo(folder, "train", 6, 32)
    (folder / "broken.png").write_bytes(b"not an image at all")
    (folder / "empty.jpg").write_bytes(b"")
    out = tmp_path / "e.npy"
    assert main(["embed", tiny_vit, "--data", str(folder), "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "e.csv")))
    assert [r["path"] for r in rows] == [f"{i:04d}.png" for i in range(6)] and "label" not in rows[0]
    assert np.load(out).shape == (6, 32)
    listed = {item["path"].rsplit("/", 1)[-1] for item in json.loads((tmp_path / "e.json").read_text())["unreadable"]}
    assert listed == {"broken.png", "empty.jpg"}
    err = capsys.readouterr().err
    assert "skipped 2 unreadable file(s)" in err and "broken.png" in err and "empty.jpg" in err


def test_a_second_command_reads_the_cached_features_without_decoding(tiny_vit, tmp_path, cache_dir, monkeypatch):
    folder = tmp_path / "photos"
    save_demo(folder, "train", 10, 32)
    (folder / "broken.png").write_bytes(b"junk")
    assert main(["embed", tiny_vit, "--data", str(folder), "--out", str(tmp_path / "a.npy")]) == 0
    assert len(list(cache_dir.iterdir())) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("images decoded although the features are cached")

    monkeypatch.setattr(collection_module, "open_images", no_decoding)
    assert main(["embed", tiny_vit, "--data", str(folder), "--out", str(tmp_path / "b.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    second = json.loads((tmp_path / "b.json").read_text())
    assert second["from_cache"] and [u["reason"] for u in second["unreadable"]] != []
    with pytest.raises(AssertionError, match="decoded although"):          # --no-cache: always decoded
        main(["embed", tiny_vit, "--data", str(folder), "--out", str(tmp_path / "c.npy"), "--no-cache"])
    (folder / "extra.png").write_bytes((folder / "0000.png").read_bytes())   # the folder changed: recompute
    with pytest.raises(AssertionError, match="decoded although"):
        main(["embed", tiny_vit, "--data", str(folder), "--out", str(tmp_path / "d.npy")])


def test_pca_matches_scikit_learn():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((50, 8)) @ rng.standard_normal((8, 8)) + 3).astype(np.float32)
    got, info = pca(torch.from_numpy(x), 3)
    ref = PCA(n_components=3).fit(x)
    want = ref.transform(x)
    np.testing.assert_allclose(np.abs(got.numpy()), np.abs(want), rtol=1e-3, atol=1e-3)
    for c in range(3):                                                  # same axes, maybe flipped
        assert abs(np.corrcoef(got[:, c].numpy(), want[:, c])[0, 1]) > 0.9999
    assert info == {"dim": 3, "from_dim": 8,
                    "explained_variance_ratio": pytest.approx(ref.explained_variance_ratio_.sum(), abs=1e-5)}
    with pytest.raises(UseError, match="--pca 9: the 50 embeddings of 8 dimensions allow 1 to 8"):
        pca(torch.from_numpy(x), 9)


def test_embed_with_pca_writes_the_projection(tiny_vit, tmp_path, cache_dir, capsys):
    out = tmp_path / "p.npy"
    assert main(["embed", tiny_vit, "--data", "demo?n=20", "--out", str(out), "--pca", "4"]) == 0
    x = np.load(out)
    full, _ = direct_features(tiny_vit, "demo?n=20")
    assert x.shape == (20, 4)
    np.testing.assert_allclose(np.abs(x), np.abs(pca(torch.from_numpy(full), 4)[0].numpy()), atol=1e-4)
    assert json.loads((tmp_path / "p.json").read_text())["pca"]["from_dim"] == 32
    assert "PCA from 32" in capsys.readouterr().out


def test_parquet_needs_pyarrow(tiny_vit, tmp_path, cache_dir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    assert main(["embed", tiny_vit, "--data", "demo?n=4", "--out", str(tmp_path / "e.parquet")]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "needs pyarrow (pip install pyarrow)" in err and "or give a .npy" in err
    assert not any(tmp_path.glob("e.*")) and not cache_dir.exists()      # refused before any work


def test_parquet_round_trip(tiny_vit, tmp_path, cache_dir):
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "e.parquet"
    assert main(["embed", tiny_vit, "--data", "demo?n=6", "--out", str(out)]) == 0
    table = pq.read_table(out).to_pydict()
    want, keys = direct_features(tiny_vit, "demo?n=6")
    assert table["path"] == keys and len(table["label"]) == 6
    np.testing.assert_allclose(np.array(table["embedding"]), want, rtol=1e-4, atol=1e-5)
