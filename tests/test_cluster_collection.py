"""``nolabel cluster`` implementation: CSV, PNG grid, sizes JSON and NMI with labels."""
import csv
import json

import pytest

from nolabel.cluster_collection import cluster_collection
from nolabel.metrics import nmi
from nolabel.use.collection import load_collection


def test_outputs(tmp_path):
    r = cluster_collection("random:vit_tiny", "demo?n=32", 3, tmp_path / "out", grid_cols=4)
    rows = list(csv.DictReader(open(tmp_path / "out" / "assignments.csv")))
    assert len(rows) == 32 and set(rows[0]) == {"path", "cluster", "distance"}
    assert {int(row["cluster"]) for row in rows} == {0, 1, 2}
    assert all(float(row["distance"]) >= 0 for row in rows)
    assert len({row["path"] for row in rows}) == 32
    sizes = json.loads((tmp_path / "out" / "cluster_sizes.json").read_text())
    assert sizes["k"] == 3 and sum(sizes["sizes"]) == 32 and min(sizes["sizes"]) > 0
    assert 0.0 <= sizes["nmi"] <= 1.0 and r["nmi"] == sizes["nmi"]          # the demo set has labels
    # the sizes and the NMI are those of the assignments written, against the images' own labels
    clusters = [int(row["cluster"]) for row in rows]
    assert sizes["sizes"] == [clusters.count(c) for c in range(3)]
    labels = load_collection("random:vit_tiny", "demo?n=32")
    by_key = dict(zip(labels.keys, labels.labels.tolist()))
    assert sizes["nmi"] == pytest.approx(nmi(clusters, [by_key[row["path"]] for row in rows]), abs=1e-12)
    assert (tmp_path / "out" / "clusters.png").read_bytes()[:4] == b"\x89PNG"
    from PIL import Image
    assert Image.open(tmp_path / "out" / "clusters.png").size[1] >= 3 * 64   # one row per cluster


def test_bad_k(tmp_path):
    with pytest.raises(ValueError, match="--k"):
        cluster_collection("pixels", "demo?n=8", 20, tmp_path)


def test_grid_rows_are_titled_with_cluster_size_and_majority_class(tmp_path, monkeypatch):
    import nolabel.cluster_collection as module
    drawn = {}
    real = module.cluster_grid

    def spy(images, picks, titles):
        drawn["titles"] = list(titles)
        return real(images, picks, titles)

    monkeypatch.setattr(module, "cluster_grid", spy)
    cluster_collection("random:vit_tiny", "demo?n=32", 3, tmp_path / "out", grid_cols=4)
    rows = list(csv.DictReader(open(tmp_path / "out" / "assignments.csv")))
    sizes = {c: sum(int(r["cluster"]) == c for r in rows) for c in range(3)}
    largest_first = sorted(sizes, key=lambda c: -sizes[c])
    assert [t.split(", ")[0] for t in drawn["titles"]] == [f"cluster {c}: {sizes[c]} images" for c in largest_first]
    assert all("% " in t for t in drawn["titles"])                          # the demo set has labels
