"""``nolabel cluster``: group a user's image collection with a trained backbone.

Features of every image (no augmentation, the model's base size: ``evaluate.models``),
l2-normalised, k-means with faiss (``ops.kmeans``, 20 Lloyd iterations, seeded). Writes to
``out_dir``:

- ``assignments.csv``: ``path,cluster,distance`` per image (distance: Euclidean, between
  the l2-normalised feature and its cluster's centroid), in dataset order;
- ``clusters.png``: one row per cluster (largest first, at most ``grid_rows``), up to
  ``grid_cols`` images nearest its centroid, titled with the cluster's id, size and, when
  the source has labels, its majority class (the grid of ``eval clustering``);
- ``cluster_sizes.json``: ``{"k", "n_images", "sizes": [...], "nmi"?: float}``; the NMI
  against the labels (thesis 3.2.2) is added when the source has labels.
"""
from __future__ import annotations

import numpy as np
import torch.nn.functional as F

from nolabel.evaluate.grid import cluster_grid, cluster_titles
from nolabel.metrics import nmi
from nolabel.ops.kmeans import kmeans
from nolabel.use.collection import Collection, load_collection
from nolabel.use.publish import csv_writer, json_writer, png_writer, publish


def _grid(collection: Collection, clusters: np.ndarray, picks: list[np.ndarray], assign: np.ndarray,
          labelled: bool):
    """One titled row of images per cluster (picks: collection rows per row of the grid)."""
    images = collection.images(np.concatenate(picks).tolist() if picks else [])
    titles = cluster_titles(clusters.tolist(), assign, collection.labels.numpy() if labelled else None,
                            collection.classes)
    return cluster_grid(images, picks, titles)


def cluster_collection(model_spec: str, data_spec: str, k: int, out_dir, *, image_size: int | None = None,
                       batch_size: int = 256, device: str = "cpu", seed: int = 0, n_iters: int = 20,
                       grid_rows: int = 20, grid_cols: int = 8, cache_dir=None) -> dict:
    """Cluster the images of ``data_spec`` into ``k`` groups with the features of
    ``model_spec`` (anything ``load_model`` accepts) and write the files of the module
    docstring into ``out_dir`` (all of them or none). ``cache_dir``: the feature cache of
    :mod:`nolabel.use.collection` (None: none). Returns the summary written to
    ``cluster_sizes.json`` with the output paths added."""
    collection = load_collection(model_spec, data_spec, image_size=image_size, batch_size=batch_size,
                                 device=device, cache_dir=cache_dir)
    feats, labels = collection.features, collection.labels
    if not 1 <= k <= len(feats):
        raise ValueError(f"--k {k}: give 1 <= k <= the number of readable images ({len(feats)})")
    x = F.normalize(feats, dim=1)                                            # (M, D)
    result = kmeans(x, k, n_iters=n_iters, seed=seed)
    assign, dist = result.assignments.numpy(), result.distances.clamp_min(0).sqrt().numpy()
    rows = [[key, c, f"{d:.6f}"] for key, c, d in zip(collection.keys, assign.tolist(), dist.tolist())]
    sizes = np.bincount(assign, minlength=k)
    summary: dict = {"k": k, "n_images": int(len(assign)), "model": model_spec, "data": data_spec,
                     "sizes": sizes.tolist()}
    labelled = collection.has_labels and bool((labels >= 0).all())
    if labelled:
        summary["nmi"] = nmi(assign, labels.numpy())
    order = np.argsort(-sizes, kind="stable")[:grid_rows]
    picks = []
    for c in order:
        members = np.flatnonzero(assign == c)
        picks.append(members[np.argsort(dist[members], kind="stable")[:grid_cols]])
    files = publish(out_dir, {"assignments.csv": csv_writer(["path", "cluster", "distance"], rows),
                              "clusters.png": png_writer(_grid(collection, order, picks, assign, labelled)),
                              "cluster_sizes.json": json_writer(summary)})
    return {**summary, "assignments": str(files[0]), "grid": str(files[1]), "sizes_file": str(files[2])}
