"""``nolabel neighbors``: the images of a collection nearest to query images, by cosine.

Features are l2-normalised and searched by inner product with faiss: exactly
(``IndexFlatIP``) below :data:`EXACT_BELOW` images, with an inverted-file index above
(``IndexIVFFlat``: 4 sqrt(N) lists trained on a seeded sample of 40 per list, 1/8 of
them probed: fast, approximate; the output says which was used). A query that is itself a file of the
collection is not listed as its own neighbour.

Writes to ``out``:

- ``neighbors.csv``: ``query,rank,path,similarity`` (and ``label``, the class of the
  neighbour, when the collection has labels); rank 1 is the nearest;
- ``neighbors.png``: one row per query (the first :data:`GRID_ROWS`): the query on the
  left, then its neighbours with their cosine similarity;
- ``neighbors.json``: the model, data, query, k, the index used and any unreadable files.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nolabel.data import DataError, open_source
from nolabel.evaluate.grid import tile_grid
from nolabel.use.collection import Collection, load_collection, resolve_model
from nolabel.use.errors import UseError
from nolabel.use.inputs import embed_images, is_image_file, read_image_file
from nolabel.use.publish import csv_writer, json_writer, png_writer, publish

EXACT_BELOW = 1_000_000     # images; an IVF index above
GRID_ROWS = 20              # queries drawn in neighbors.png
GRID_COLS = 10              # neighbours drawn per query
TILE = 64                   # px per image in the PNG (small images are enlarged)


def unit_rows(x) -> np.ndarray:
    """float32 (N, D) rows scaled to unit length (all-zero rows stay zero)."""
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def cosine_index(bank: np.ndarray, exact_below: int = EXACT_BELOW, seed: int = 0):
    """(faiss index over the unit rows ``bank`` (N, D), description of the search)."""
    import faiss

    n, dim = bank.shape
    if n < exact_below:
        index = faiss.IndexFlatIP(dim)
        index.add(bank)
        return index, f"exact (faiss IndexFlatIP over {n} images)"
    nlist = max(1, int(4 * math.sqrt(n)))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    sample = np.random.default_rng(seed).permutation(n)[: min(n, 40 * nlist)]   # faiss asks for >= 39 per list
    index.train(bank[np.sort(sample)])
    index.add(bank)
    index.nprobe = max(1, nlist // 8)
    return index, (f"approximate (faiss IndexIVFFlat over {n} images, {nlist} lists, {index.nprobe} probed; "
                   f"exact search is used below {exact_below} images)")


def cosine_neighbors(queries, bank, k: int, exact_below: int = EXACT_BELOW,
                     exclude: list[int | None] | None = None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The ``k`` rows of ``bank`` (N, D) most cosine-similar to each row of ``queries``
    (Q, D): (similarities float32 (Q, k), indices int64 (Q, k), description of the index),
    nearest first; k is capped at N (at N - 1 where a row is excluded). ``exclude[q]``: a
    bank row never returned for query q (the query itself)."""
    if k < 1:
        raise UseError(f"--k {k}: give at least 1 neighbour")
    bank, queries = unit_rows(bank), unit_rows(queries)
    excluded = exclude is not None and any(e is not None for e in exclude)
    k = min(k, len(bank) - int(excluded))
    if k < 1:
        raise UseError("the collection holds no image other than the query itself: nothing to compare it with")
    index, description = cosine_index(bank, exact_below)
    sims, idx = index.search(queries, k + int(excluded))
    if (idx < 0).any():                 # an IVF probe found too few candidates: probe every list
        index.nprobe = index.nlist
        sims, idx = index.search(queries, k + int(excluded))
    if excluded:
        own = np.array([e if e is not None else -1 for e in exclude])[:, None] == idx    # (Q, k + 1)
        own[own.sum(1) == 0, -1] = True                                                  # else drop the last
        sims, idx = sims[~own].reshape(len(idx), k), idx[~own].reshape(len(idx), k)
    return torch.from_numpy(np.ascontiguousarray(sims)), torch.from_numpy(idx.astype(np.int64)), description


@dataclass
class Queries:
    """Query features float32 (Q, D), their names, images uint8 (Q, 3, S, S) and skipped files."""
    features: torch.Tensor
    names: list[str]
    images: torch.Tensor
    bad: list[tuple[str, str]]
    files: list[Path | None]


def collection_files(spec: str, keys: list[str]) -> list[Path | None]:
    """Resolved file per item of a folder spec (None elsewhere: archives, demo, cifar10)."""
    body = spec.partition("?")[0].removeprefix("flat:")
    root = Path(body).expanduser()
    if not body or not root.is_dir():
        return [None] * len(keys)
    return [(root / key).resolve() for key in keys]


def check_query(query: str | Path) -> Path:
    path = Path(query).expanduser()
    if not path.exists():
        raise UseError(f"--query {query}: no such file or folder; give an image file or a folder of images")
    return path


def load_queries(collection: Collection, query: str | Path, *, batch_size: int, device, cache_dir,
                 progress, image: torch.Tensor | None = None) -> Queries:
    """Features of one image file (``image``: already decoded), or of every readable image
    of a folder or archive."""
    path = check_query(query)
    model, size = collection.model, collection.image_size
    if is_image_file(path):
        image = (read_image_file(path, size, "--query") if image is None else image)[None]
        return Queries(embed_images(model, image, batch_size, device), [str(query)], image, [],
                       [path.resolve()])
    found = load_collection(model, str(path), image_size=size, batch_size=batch_size, device=device,
                            cache_dir=cache_dir, progress=progress, role="--query")
    names = [str(Path(str(query)) / key) for key in found.keys]
    return Queries(found.features, names, found.images(range(min(len(found), GRID_ROWS))), found.bad,
                   collection_files(str(path), found.keys))


def find_neighbors(collection: Collection, queries: Queries, k: int,
                   exact_below: int = EXACT_BELOW) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(similarities (Q, k), collection rows (Q, k), index description); a query file that is
    in the collection is not its own neighbour."""
    own = {f: i for i, f in enumerate(collection_files(collection.spec, collection.keys)) if f is not None}
    exclude = [own.get(f) if f is not None else None for f in queries.files]
    return cosine_neighbors(queries.features, collection.features, k, exact_below, exclude)


def write_neighbors(out, collection: Collection, queries: Queries, sims: torch.Tensor, rows: torch.Tensor,
                    summary: dict) -> list[Path]:
    labels = collection.label_names()
    header = ["query", "rank", "path"] + (["label"] if labels else []) + ["similarity"]
    lines = []
    for q, name in enumerate(queries.names):
        for rank, (s, r) in enumerate(zip(sims[q].tolist(), rows[q].tolist()), 1):
            lines.append([name, rank, collection.keys[r]] + ([labels[r]] if labels else []) + [f"{s:.6f}"])
    shown = min(len(queries.names), GRID_ROWS)
    picks = rows[:shown, :GRID_COLS]
    images = collection.images(picks.flatten().tolist()).view(shown, picks.shape[1], 3, collection.image_size,
                                                              collection.image_size) if shown else None
    grid = [[(queries.images[q], "query")] + [(images[q, j], f"{sims[q, j].item():.3f}")
                                              for j in range(picks.shape[1])] for q in range(shown)]
    return publish(out, {"neighbors.csv": csv_writer(header, lines),
                         "neighbors.png": png_writer(tile_grid(grid, TILE, split_after=1)),
                         "neighbors.json": json_writer(summary)})


def run_neighbors(model, data_spec: str, query, k: int, out, *, image_size: int | None = None,
                  batch_size: int = 256, device="cpu", cache_dir=None, progress=False,
                  exact_below: int = EXACT_BELOW) -> dict:
    """The command: search, then write the files of the module docstring into ``out``.
    Returns the summary (``neighbors.json``) with ``files`` added."""
    if k < 1:
        raise UseError(f"--k {k}: give at least 1 neighbour")
    path = check_query(query)
    model, size = resolve_model(model, data_spec, image_size, "--data", "--image-size")
    image = read_image_file(path, size, "--query") if is_image_file(path) else None    # refused before any work
    if image is None:     # a folder, archive or .txt/.csv list of queries: its listing checked before any work
        try:
            open_source(str(path))
        except DataError as exc:
            reason = str(exc).splitlines()[0].removeprefix(f"cannot open data spec '{path}': ")
            raise UseError(f"--query {query}: {reason}; give an image file, a folder or archive of images, "
                           "or a .txt/.csv list of image paths") from None
    collection = load_collection(model, data_spec, image_size=size, batch_size=batch_size, device=device,
                                 cache_dir=cache_dir, progress=progress)
    queries = load_queries(collection, query, batch_size=batch_size, device=device, cache_dir=cache_dir,
                           progress=progress, image=image)
    sims, rows, description = find_neighbors(collection, queries, k, exact_below)
    summary = {"model": collection.model.name, "data": data_spec, "query": str(query), "k": int(rows.shape[1]),
               "k_asked": k, "n_images": len(collection), "n_queries": len(queries.names), "index": description,
               "image_size": collection.image_size,
               "unreadable": [{"path": p, "reason": r} for p, r in collection.bad + queries.bad]}
    files = write_neighbors(out, collection, queries, sims, rows, summary)
    return {**summary, "files": [str(f) for f in files]}
