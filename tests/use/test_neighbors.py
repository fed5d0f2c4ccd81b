"""``nolabel neighbors``: cosine search against a naive loop, the IVF index, the command's files,
and the neighbours of demo images under a trained backbone."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nolabel.cli import main
from nolabel.use.errors import UseError
from nolabel.use.neighbors import cosine_neighbors
from tests.use.conftest import BANK, SIZE, random_unit, save_demo


def naive_neighbors(queries: np.ndarray, bank: np.ndarray, k: int, exclude=None):
    """Cosine of every pair by loops, sorted; the excluded bank row skipped."""
    sims, rows = [], []
    for q, query in enumerate(queries):
        scores = []
        for i, item in enumerate(bank):
            if exclude is not None and exclude[q] == i:
                continue
            cos = float(np.dot(query, item) / (np.linalg.norm(query) * np.linalg.norm(item)))
            scores.append((cos, i))
        scores.sort(key=lambda t: -t[0])
        sims.append([s for s, _ in scores[:k]])
        rows.append([i for _, i in scores[:k]])
    return np.array(sims), np.array(rows)


def test_cosine_neighbors_match_a_naive_loop():
    rng = np.random.default_rng(0)
    bank = rng.standard_normal((60, 12)).astype(np.float32) * rng.uniform(0.1, 5, (60, 1)).astype(np.float32)
    queries = rng.standard_normal((7, 12)).astype(np.float32)
    sims, rows, description = cosine_neighbors(queries, bank, 5)
    want_s, want_r = naive_neighbors(queries, bank, 5)
    assert sims.shape == rows.shape == (7, 5) and "exact" in description
    np.testing.assert_allclose(sims.numpy(), want_s, atol=1e-5)
    np.testing.assert_array_equal(rows.numpy(), want_r)       # random data: no ties


def test_excluded_rows_and_k_capped_at_the_collection():
    rng = np.random.default_rng(1)
    bank = rng.standard_normal((9, 6)).astype(np.float32)
    queries = np.concatenate([bank[[3, 7]], rng.standard_normal((1, 6)).astype(np.float32)])
    exclude = [3, 7, None]
    sims, rows, _ = cosine_neighbors(queries, bank, 50, exclude=exclude)
    want_s, want_r = naive_neighbors(queries, bank, 8, exclude=exclude)
    assert rows.shape == (3, 8)                                # k capped to N - 1 with an excluded row
    np.testing.assert_array_equal(rows.numpy(), want_r)
    np.testing.assert_allclose(sims.numpy(), want_s, atol=1e-5)
    sims, rows, _ = cosine_neighbors(queries[:1], bank, 50)
    assert rows.shape == (1, 9) and rows[0, 0] == 3 and sims[0, 0] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(UseError, match="--k 0"):
        cosine_neighbors(queries, bank, 0)


def test_ivf_index_above_the_exact_limit_finds_nearly_all_true_neighbours():
    rng = np.random.default_rng(2)
    centres = random_unit(rng, 20, 16)
    bank = centres[rng.integers(0, 20, 3000)] + 0.15 * rng.standard_normal((3000, 16)).astype(np.float32)
    queries = bank[:50] + 0.05 * rng.standard_normal((50, 16)).astype(np.float32)
    _, exact, exact_text = cosine_neighbors(queries, bank, 10)
    sims, approx, text = cosine_neighbors(queries, bank, 10, exact_below=1000)
    assert "exact" in exact_text and "approximate" in text and "IVF" in text
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx.tolist(), exact.tolist())])
    assert recall >= 0.9
    assert (np.diff(sims.numpy(), axis=1) <= 1e-6).all()       # nearest first


def test_neighbours_of_demo_images_share_their_class_under_a_trained_model(trained_model, tmp_path, cache_dir):
    queries = tmp_path / "queries"
    save_demo(queries, "test", 30, SIZE, by_class=True)        # held-out images, in <class>/ folders
    purity = {}
    for name, model in (("trained", trained_model), ("random", f"random:{trained_model}")):
        out = tmp_path / name
        assert main(["neighbors", model, "--data", BANK, "--query", str(queries), "--k", "10", "--out", str(out),
                     "--device", "cpu"]) == 0
        rows = list(csv.DictReader(open(out / "neighbors.csv")))
        assert len(rows) == 30 * 10 and set(rows[0]) == {"query", "rank", "path", "label", "similarity"}
        assert [int(r["rank"]) for r in rows[:10]] == list(range(1, 11))
        purity[name] = np.mean([r["label"] == Path(r["query"]).parent.name for r in rows])
        summary = json.loads((out / "neighbors.json").read_text())
        assert summary["k"] == 10 and summary["n_images"] == 1000 and summary["index"].startswith("exact")
        grid = Image.open(out / "neighbors.png")
        assert grid.size[0] > 11 * 64 and grid.size[1] >= 20 * 64  # query + 10 neighbours, first 20 queries
    assert purity["trained"] > 0.6 and purity["random"] < 0.3, purity


def test_query_image_inside_the_collection_is_not_its_own_neighbour(random_resnet, tmp_path, cache_dir, capsys):
    folder = tmp_path / "photos"
    paths = save_demo(folder, "train", 12, 32)
    out = tmp_path / "out"
    assert main(["neighbors", random_resnet, "--data", str(folder), "--query", str(paths[4]), "--k", "3",
                 "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "neighbors.csv")))
    assert [r["query"] for r in rows] == [str(paths[4])] * 3
    assert "0004.png" not in {r["path"] for r in rows} and "label" not in rows[0]
    sims = [float(r["similarity"]) for r in rows]
    assert sims == sorted(sims, reverse=True) and sims[0] < 0.9999
    assert "exact (faiss IndexFlatIP over 12 images)" in capsys.readouterr().out
