"""``nolabel duplicates``: groups of near-duplicate images in a collection.

Two images are linked when the cosine similarity of their features is at least the
threshold, or when their bytes are identical (SHA-256 of the file, read once more but not
decoded; of the decoded pixels for in-memory sources such as ``demo``); a group is a
connected set of linked images (so a chain of small edits stays one group). Pairs are
found with a faiss range search (exact below ``neighbors.EXACT_BELOW`` images, IVF above),
a chunk of queries at a time; a threshold that links more than :data:`MAX_PAIRS_PER_IMAGE`
pairs per image is refused, as it is grouping similar images, not duplicates.

The default threshold comes from the collection itself (:func:`default_threshold`): with
d the cosine distance (1 - similarity) of each image to its nearest other image, pairs
far closer than typical on a log scale (outliers below the median of log d by
max(4, sqrt(2 ln N) + 0.5) robust spreads, and at least 4x closer) are duplicates. The
output states the value and how it was derived.

Writes to ``out``:

- ``duplicates.csv``: ``group,path,similarity,exact_copy_of`` (and ``label`` when the
  collection has labels): groups largest first, members in collection order; similarity is
  to the group's first member; ``exact_copy_of`` names an earlier member with the same
  bytes;
- ``groups/group_NNNN.png``: the images of each group (at most :data:`MAX_PNGS` groups, up
  to :data:`PNG_MEMBERS` images each) with their similarity to the first;
- ``duplicates.json``: threshold, how it was chosen, counts, the index used, unreadable files.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nolabel.evaluate.grid import tile_grid
from nolabel.use.collection import Collection, load_collection
from nolabel.use.errors import UseError
from nolabel.use.neighbors import EXACT_BELOW, TILE, cosine_index, unit_rows
from nolabel.use.publish import csv_writer, json_writer, png_writer, publish

MIN_IMAGES_FOR_DEFAULT = 10  # fewer: give --threshold
MIN_Z = 4.0                  # robust spreads below the typical log distance to the nearest image
Z_MARGIN = 0.5               # beyond sqrt(2 ln N), the expected lowest of N normal values
MIN_SPREAD = 0.1             # floor of that spread (log units) for collections of near-equal distances
MIN_FACTOR = 4.0             # and at least this many times closer than the typical nearest image
MIN_DISTANCE = 1e-7          # float32 cosine resolution; identical features have distance 0
MAX_PAIRS_PER_IMAGE = 50     # more linked pairs than this per image: not duplicates
MAX_PNGS = 500
PNG_MEMBERS = 16
CHUNK_PAIRS = 20_000_000     # candidate pairs compared per range-search call


def check_threshold(threshold: float | None, option: str = "--threshold") -> None:
    if threshold is not None and not -1.0 <= threshold <= 1.0:
        raise UseError(f"{option} {threshold}: a cosine similarity lies in [-1, 1]; give e.g. 0.95, or leave it "
                       "out to derive one from the collection")


def nearest_other_similarity(x: np.ndarray, index=None) -> np.ndarray:
    """float32 (N,): each unit row's cosine similarity to its nearest other row (N >= 2);
    ``index``: a :func:`cosine_index` over ``x`` (built when None)."""
    index = cosine_index(x)[0] if index is None else index
    sims, idx = index.search(x, 2)
    own = idx == np.arange(len(x))[:, None]                 # usually column 0; ties may swap them
    return np.where(own[:, 0], sims[:, 1], sims[:, 0]).astype(np.float32)


def default_threshold(x: np.ndarray, index=None) -> tuple[float, str]:
    """(threshold, how it was derived) for unit rows ``x`` (N >= :data:`MIN_IMAGES_FOR_DEFAULT`).

    With d the cosine distance of each image to its nearest other image, log d of distinct
    images spreads roughly normally (median m, robust spread s = 1.4826 MAD, at least
    :data:`MIN_SPREAD`), and duplicates are outliers far below. Pairs closer than
    exp(m - z s) are linked, z = max(:data:`MIN_Z`, sqrt(2 ln N) + :data:`Z_MARGIN`):
    sqrt(2 ln N) is about the lowest z among N normal values, so a collection without
    duplicates is expected to have no linked pair at any size; and never closer than
    :data:`MIN_FACTOR` times below exp(m) (where the distances hardly spread). The
    statistics are taken twice, the second time without the first pass's outliers, so
    that many duplicates do not widen the spread.

    Measured on demo shapes (32 px) with planted exact, JPEG (quality 95) and 1.5x-enlarged
    copies: with a random ResNet-18 every copy was found and no distinct pair linked, among
    200 and 1,000 images; with raw pixels likewise, but for one JPEG copy of 1,000; a random
    ViT missed 2-3 JPEG copies. A model trained to classify the shapes puts a JPEG copy as
    far from its original as two images of one class: no threshold tells those apart."""
    n = len(x)
    if n < MIN_IMAGES_FOR_DEFAULT:
        raise UseError(f"the collection holds {n} readable images, too few to derive a threshold from (at least "
                       f"{MIN_IMAGES_FOR_DEFAULT}); give --threshold, e.g. 0.95")
    log_d = np.log(np.clip(1.0 - nearest_other_similarity(x, index).astype(np.float64), MIN_DISTANCE, 2.0))
    z = max(MIN_Z, math.sqrt(2 * math.log(n)) + Z_MARGIN)
    distinct = log_d
    for _ in range(2):        # the statistics of distinct images: leave the outliers of a first pass out
        median = float(np.median(distinct))
        spread = max(1.4826 * float(np.median(np.abs(distinct - median))), MIN_SPREAD)
        distinct = log_d[log_d >= median - z * spread]
    distance = math.exp(median - max(z * spread, math.log(MIN_FACTOR)))
    threshold = 1.0 - distance
    typical = math.exp(median)
    return threshold, (f"derived from the collection: an image's cosine distance to its nearest other image is "
                       f"typically {typical:.3g}; pairs {typical / distance:.1f}x closer than that (distance <= "
                       f"{distance:.3g}: {z:.2f} robust spreads of {spread:.2f} below on a log scale, and at least "
                       f"{MIN_FACTOR:g}x) are duplicates")


def similar_pairs(x: np.ndarray, threshold: float, index=None,
                  max_pairs: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair i < j of unit rows with cosine >= ``threshold``: (i, j, similarity).
    Raises UseError when there are more than ``max_pairs``."""
    n = len(x)
    max_pairs = MAX_PAIRS_PER_IMAGE * n if max_pairs is None else max_pairs
    index = cosine_index(x)[0] if index is None else index
    radius = float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))   # faiss keeps scores > radius
    step = max(1, CHUNK_PAIRS // max(n, 1))
    found_i, found_j, found_s, total = [], [], [], 0
    for start in range(0, n, step):
        lims, sims, ids = index.range_search(x[start:start + step], radius)
        rows = start + np.repeat(np.arange(len(lims) - 1), np.diff(lims).astype(np.int64))
        keep = (ids > rows) & (sims >= threshold)
        found_i.append(rows[keep]), found_j.append(ids[keep].astype(np.int64)), found_s.append(sims[keep])
        total += int(keep.sum())
        if total > max_pairs:
            raise UseError(f"--threshold {threshold:g} links more than {max_pairs} pairs of the {n} images: that "
                           "groups similar images, not duplicates; give a higher threshold (or leave it out)")
    cat = (lambda parts, dtype: np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype))
    return cat(found_i, np.int64), cat(found_j, np.int64), cat(found_s, np.float32)


def connected_groups(n: int, i: np.ndarray, j: np.ndarray) -> list[np.ndarray]:
    """Connected components of the graph on ``n`` nodes with edges (i, j) that have two or
    more members: each sorted, largest group first (ties: the smallest first member)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if n == 0:
        return []
    graph = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    order = np.argsort(component, kind="stable")
    members = np.split(order, np.flatnonzero(np.diff(component[order])) + 1)
    groups = [np.sort(m) for m in members if len(m) > 1]
    return sorted(groups, key=lambda g: (-len(g), int(g[0])))


def content_hashes(collection: Collection) -> list[str]:
    """SHA-256 per row: of the file's bytes, or of the decoded pixels for in-memory sources."""
    source = collection.source()
    where = {key: i for i, key in enumerate(source.keys)}
    hashes = []
    for key in collection.keys:
        i = where.get(key)
        try:
            data = (source.images[i].numpy().tobytes() if source.images is not None else source.read(i)) \
                if i is not None else None
        except OSError:
            data = None
        hashes.append(hashlib.sha256(data).hexdigest() if data is not None else f"unreadable:{key}")
    return hashes


@dataclass
class Duplicates:
    """groups: collection rows per group; similarity: per group, each member's cosine to the
    first; exact_of: per group, for each member the row of an earlier member with the same
    bytes (or -1)."""
    groups: list[np.ndarray]
    similarity: list[np.ndarray]
    exact_of: list[np.ndarray]
    threshold: float
    how: str
    n_pairs: int
    index: str


def find_duplicates(features, hashes: list[str], threshold: float | None = None,
                    exact_below: int = EXACT_BELOW) -> Duplicates:
    """Groups of rows of ``features`` (N, D) linked by cosine >= ``threshold`` (None: the
    collection's default) or by equal ``hashes``."""
    check_threshold(threshold)
    x = unit_rows(features)
    if len(x) < 2:
        raise UseError(f"the collection holds {len(x)} readable image(s): duplicates need at least 2")
    index, description = cosine_index(x, exact_below)
    how = "given with --threshold"
    if threshold is None:
        threshold, how = default_threshold(x, index)
    i, j, _ = similar_pairs(x, threshold, index)
    first: dict[str, int] = {}
    same = np.array([first.setdefault(h, row) for row, h in enumerate(hashes)])       # (N,) first row of its bytes
    copies = np.flatnonzero(same != np.arange(len(same)))
    groups = connected_groups(len(x), np.concatenate([i, copies]), np.concatenate([j, same[copies]]))
    similarity = [x[g] @ x[g[0]] for g in groups]
    exact_of = []
    for g in groups:
        earlier = same[g]
        exact_of.append(np.where(earlier != g, earlier, -1))
    return Duplicates(groups, similarity, exact_of, float(threshold), how, int(len(i)), description)


def write_duplicates(out, collection: Collection, found: Duplicates, summary: dict) -> list[Path]:
    labels = collection.label_names()
    header = ["group", "path"] + (["label"] if labels else []) + ["similarity", "exact_copy_of"]
    lines, files = [], {}
    drawn = [g[:PNG_MEMBERS] for g in found.groups[:MAX_PNGS]]
    images = collection.images(np.concatenate(drawn).tolist() if drawn else [])    # decoded in one pass
    start = 0
    for number, (g, sims, exact) in enumerate(zip(found.groups, found.similarity, found.exact_of)):
        for row, s, e in zip(g.tolist(), sims.tolist(), exact.tolist()):
            lines.append([number, collection.keys[row]] + ([labels[row]] if labels else [])
                         + [f"{s:.6f}", collection.keys[e] if e >= 0 else ""])
        if number < len(drawn):
            cells = [(images[start + m], "first" if m == 0 else ("same bytes" if exact[m] >= 0 else f"{sims[m]:.4f}"))
                     for m in range(len(drawn[number]))]
            start += len(drawn[number])
            files[f"groups/group_{number:04d}.png"] = png_writer(tile_grid([cells], TILE))
    files = {"duplicates.csv": csv_writer(header, lines), **files, "duplicates.json": json_writer(summary)}
    return publish(out, files, replace_dirs=("groups",))


def run_duplicates(model, data_spec: str, out, *, threshold: float | None = None, image_size: int | None = None,
                   batch_size: int = 256, device="cpu", cache_dir=None, progress=False,
                   exact_below: int = EXACT_BELOW) -> dict:
    """The command: group, then write the files of the module docstring into ``out``.
    Returns the summary (``duplicates.json``) with ``files`` added."""
    check_threshold(threshold)
    collection = load_collection(model, data_spec, image_size=image_size, batch_size=batch_size, device=device,
                                 cache_dir=cache_dir, progress=progress)
    if len(collection) < 2:
        raise UseError(f"--data {data_spec}: holds {len(collection)} readable image; duplicates need at least 2")
    if threshold is None and len(collection) < MIN_IMAGES_FOR_DEFAULT:
        raise UseError(f"--data {data_spec}: holds {len(collection)} readable images, too few to derive a threshold "
                       f"from (at least {MIN_IMAGES_FOR_DEFAULT}); give --threshold, e.g. 0.95")
    found = find_duplicates(collection.features, content_hashes(collection), threshold, exact_below)
    summary = {"model": collection.model.name, "data": data_spec, "threshold": round(found.threshold, 6),
               "threshold_source": found.how, "n_images": len(collection), "n_groups": len(found.groups),
               "n_images_in_groups": int(sum(len(g) for g in found.groups)),
               "n_exact_copies": int(sum(int((e >= 0).sum()) for e in found.exact_of)),
               "n_similar_pairs": found.n_pairs, "index": found.index, "pngs": min(len(found.groups), MAX_PNGS),
               "image_size": collection.image_size,
               "unreadable": [{"path": p, "reason": r} for p, r in collection.bad]}
    files = write_duplicates(out, collection, found, summary)
    return {**summary, "files": [str(f) for f in files]}
