"""``nolabel duplicates``: pair search and grouping against a naive union-find over a dense
similarity matrix; planted copies found under the default threshold, no false group."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from nolabel.cli import main
from nolabel.use.duplicates import connected_groups, default_threshold, find_duplicates, similar_pairs
from nolabel.use.errors import UseError
from nolabel.use.neighbors import unit_rows
from tests.use.conftest import random_unit, save_demo


def naive_groups(x: np.ndarray, threshold: float, same=None) -> list[list[int]]:
    """Union-find over the dense cosine matrix (and equal ``same`` keys), groups of 2+."""
    n = len(x)
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = unit @ unit.T
    for i in range(n):
        for j in range(i + 1, n):
            if sims[i, j] >= threshold or (same is not None and same[i] == same[j]):
                parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: (-len(g), g[0]))


def planted(rng, n=80, d=16):
    """Random directions plus near copies of some (chains of two steps included)."""
    x = random_unit(rng, n, d)
    copies = [x[i] + 0.03 * rng.standard_normal(d).astype(np.float32) for i in (3, 3, 10, 41)]
    chain = x[20] + 0.05 * rng.standard_normal(d).astype(np.float32)
    chain2 = chain + 0.05 * rng.standard_normal(d).astype(np.float32)
    return np.concatenate([x, np.stack(copies + [chain, chain2])]).astype(np.float32)


@pytest.mark.parametrize("threshold", [0.99, 0.95, 0.6, 0.3])
def test_grouping_matches_a_naive_union_find(threshold):
    x = planted(np.random.default_rng(0))
    i, j, s = similar_pairs(unit_rows(x), threshold)
    unit = unit_rows(x)
    assert (i < j).all() and np.allclose(s, (unit[i] * unit[j]).sum(1), atol=1e-5) and (s >= threshold).all()
    got = [g.tolist() for g in connected_groups(len(x), i, j)]
    assert got == naive_groups(x, threshold)
    if threshold == 0.95:
        assert [3, 80, 81] in got and [20, 84, 85] in got    # copies and a chain of edits


def test_hashes_link_identical_items_whatever_the_threshold():
    x = planted(np.random.default_rng(1))
    hashes = [str(i) for i in range(len(x))]
    hashes[50] = hashes[7]                                     # same bytes, different features
    found = find_duplicates(x, hashes, threshold=0.999)
    assert [g.tolist() for g in found.groups] == naive_groups(x, 0.999, same=hashes)
    group = next(k for k, g in enumerate(found.groups) if 50 in g)
    assert found.groups[group].tolist() == [7, 50] and found.exact_of[group].tolist() == [-1, 7]


def test_too_low_a_threshold_is_refused_rather_than_linking_everything():
    x = random_unit(np.random.default_rng(2), 200, 8)
    with pytest.raises(UseError, match="--threshold -1 links more than"):
        similar_pairs(x, -1.0)


def test_default_threshold_is_stated_and_needs_enough_images():
    rng = np.random.default_rng(3)
    x = unit_rows(planted(rng, n=300, d=32))
    threshold, how = default_threshold(x)
    assert 0.8 < threshold < 0.99 and "derived from the collection" in how
    groups = [g.tolist() for g in find_duplicates(x, [str(i) for i in range(len(x))]).groups]
    assert groups == naive_groups(x, threshold) and [3, 300, 301] in groups and [41, 303] in groups
    with pytest.raises(UseError, match="too few to derive a threshold"):
        default_threshold(x[:5])


def _copies(folder, paths):
    """Plant exact, re-encoded (JPEG 95) and enlarged (1.5x) copies; returns the expected groups."""
    expected = []
    for k, source in enumerate(paths[:4]):
        (folder / f"exact{k}.png").write_bytes(source.read_bytes())
        expected.append({source.name, f"exact{k}.png"})
    for k, source in enumerate(paths[4:8]):
        Image.open(source).save(folder / f"jpeg{k}.jpg", quality=95)
        expected.append({source.name, f"jpeg{k}.jpg"})
    for k, source in enumerate(paths[8:12]):
        Image.open(source).resize((48, 48), Image.Resampling.BICUBIC).save(folder / f"large{k}.png")
        expected.append({source.name, f"large{k}.png"})
    return expected


def test_planted_copies_are_found_and_distinct_shapes_never_grouped(random_resnet, tmp_path, cache_dir, capsys):
    folder = tmp_path / "photos"
    paths = save_demo(folder, "train", 150, 32, seed=3)
    expected = _copies(folder, paths)
    out = tmp_path / "out"
    assert main(["duplicates", random_resnet, "--data", str(folder), "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "duplicates.csv")))
    groups: dict[str, set] = {}
    for r in rows:
        groups.setdefault(r["group"], set()).add(r["path"])
    assert sorted(map(sorted, groups.values())) == sorted(map(sorted, expected))
    exact = {r["path"]: r["exact_copy_of"] for r in rows if r["exact_copy_of"]}
    assert exact == {f"exact{k}.png": paths[k].name for k in range(4)}
    summary = json.loads((out / "duplicates.json").read_text())
    assert summary["n_groups"] == 12 and summary["n_exact_copies"] == 4 and summary["n_images"] == 162
    assert summary["threshold_source"].startswith("derived from the collection")
    assert sorted(p.name for p in (out / "groups").iterdir()) == [f"group_{g:04d}.png" for g in range(12)]
    printed = capsys.readouterr().out
    assert "12 group(s)" in printed and f"cosine >= {summary['threshold']:.4f}" in printed
    # the margins the default threshold leaves on this collection, both ways
    from nolabel.use.collection import load_collection
    from nolabel.use.duplicates import nearest_other_similarity

    collection = load_collection(random_resnet, str(folder), cache_dir=cache_dir)
    assert collection.from_cache                                # the command's features, not recomputed
    x, where = unit_rows(collection.features), {k: i for i, k in enumerate(collection.keys)}
    distinct = [where[p.name] for p in paths]
    closest_distinct = 1 - nearest_other_similarity(x[distinct]).max()
    farthest_copy = max(1 - float(x[where[a]] @ x[where[b]]) for a, b in map(sorted, expected))
    assert farthest_copy * 1.3 < 1 - summary["threshold"] < closest_distinct / 1.1


def test_given_threshold_and_a_second_run_replacing_the_group_pngs(random_resnet, tmp_path, cache_dir):
    folder = tmp_path / "photos"
    paths = save_demo(folder, "train", 20, 32, seed=4)
    _copies(folder, paths)
    out = tmp_path / "out"
    assert main(["duplicates", random_resnet, "--data", str(folder), "--out", str(out), "--threshold", "0.99"]) == 0
    assert json.loads((out / "duplicates.json").read_text())["threshold_source"] == "given with --threshold"
    assert main(["duplicates", random_resnet, "--data", str(folder), "--out", str(out), "--threshold", "1"]) == 0
    summary = json.loads((out / "duplicates.json").read_text())
    assert summary["n_groups"] == len(list((out / "groups").iterdir())) >= 4    # no PNG of the first run left


def test_the_ivf_index_above_the_exact_limit_groups_the_same_planted_copies():
    x = planted(np.random.default_rng(4), n=400, d=16)
    hashes = [str(i) for i in range(len(x))]
    exact = find_duplicates(x, hashes, threshold=0.97)
    approx = find_duplicates(x, hashes, threshold=0.97, exact_below=100)
    assert "IVF" in approx.index and "exact" in exact.index
    assert [g.tolist() for g in approx.groups] == [g.tolist() for g in exact.groups] == naive_groups(x, 0.97)
