"""``nolabel cluster``: group a user's image collection with a trained backbone.

Features of every image (no augmentation, the model's base size: ``evaluate.models``),
l2-normalised, k-means with faiss (``ops.kmeans``, 20 Lloyd iterations, seeded). Writes to
``out_dir``:

- ``assignments.csv``: ``path,cluster,distance`` per image (distance: Euclidean, between
  the l2-normalised feature and its cluster's centroid), in dataset order;
- ``clusters.png``: one row per cluster (largest first, at most ``grid_rows``), up to
  ``grid_cols`` images nearest its centroid;
- ``cluster_sizes.json``: ``{"k", "n_images", "sizes": [...], "nmi"?: float}``; the NMI
  against the labels (thesis 3.2.2) is added when the source has labels.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nolabel.data import open_images
from nolabel.evaluate.metrics import nmi
from nolabel.evaluate.models import load_model
from nolabel.ops.kmeans import kmeans


@torch.no_grad()
def _features(model, data, batch_size: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(features (M, D), labels (M,), dataset positions (M,)); unreadable files are skipped.
    ``evaluate.features.extract_features`` drops the positions, which the CSV needs."""
    model.to(device)
    feats, labels, index = [], [], []
    for batch in data.batches(batch_size, shuffle=False, drop_last=False):
        feats.append(model.features(batch.images.to(device)).float().cpu())
        labels.append(batch.labels)
        index.append(batch.index)
    if not feats:
        raise ValueError(f"{data.spec}: no readable images to cluster")
    return torch.cat(feats), torch.cat(labels), torch.cat(index)


def _grid(data, picks: list[np.ndarray], path: Path) -> None:
    """PNG with one row of images per cluster (picks: dataset positions per row)."""
    from PIL import Image

    size, cols = data.image_size, max((len(p) for p in picks), default=1)
    wanted = {int(i): (r, j) for r, p in enumerate(picks) for j, i in enumerate(p)}
    canvas = Image.new("RGB", (cols * (size + 2), max(1, len(picks)) * (size + 2)), "white")
    for batch in data.batches(256, shuffle=False, drop_last=False):
        for image, i in zip(batch.images, batch.index.tolist()):
            if i in wanted:
                r, j = wanted[i]
                tile = Image.fromarray(image.permute(1, 2, 0).numpy())
                canvas.paste(tile, (j * (size + 2), r * (size + 2)))
    canvas.save(path)


def cluster_collection(model_spec: str, data_spec: str, k: int, out_dir, *, image_size: int | None = None,
                       batch_size: int = 256, device: str = "cpu", seed: int = 0, n_iters: int = 20,
                       grid_rows: int = 20, grid_cols: int = 8) -> dict:
    """Cluster the images of ``data_spec`` into ``k`` groups with the features of
    ``model_spec`` (anything ``load_model`` accepts) and write the files of the module
    docstring into ``out_dir``. Returns the summary written to ``cluster_sizes.json`` with
    the output paths added."""
    model = load_model(model_spec, image_size=image_size)
    data = open_images(data_spec, image_size=image_size or model.image_size, progress=False)
    feats, labels, index = _features(model, data, batch_size, device)
    if not 1 <= k <= len(feats):
        raise ValueError(f"--k {k}: give 1 <= k <= the number of readable images ({len(feats)})")
    x = F.normalize(feats, dim=1)                                            # (M, D)
    result = kmeans(x, k, n_iters=n_iters, seed=seed)
    assign, dist = result.assignments.numpy(), result.distances.clamp_min(0).sqrt().numpy()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "assignments.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "cluster", "distance"])
        for i, c, d in zip(index.tolist(), assign.tolist(), dist.tolist()):
            writer.writerow([data.keys[i], c, f"{d:.6f}"])
    sizes = np.bincount(assign, minlength=k)
    summary: dict = {"k": k, "n_images": int(len(assign)), "model": model_spec, "data": data_spec,
                     "sizes": sizes.tolist()}
    if data.has_labels and bool((labels >= 0).all()):
        summary["nmi"] = nmi(assign, labels.numpy())
    order = np.argsort(-sizes, kind="stable")[:grid_rows]
    picks = []
    for c in order:
        members = np.flatnonzero(assign == c)
        picks.append(index.numpy()[members[np.argsort(dist[members], kind="stable")[:grid_cols]]])
    _grid(data, picks, out / "clusters.png")
    (out / "cluster_sizes.json").write_text(json.dumps(summary, indent=2))
    return {**summary, "assignments": str(out / "assignments.csv"), "grid": str(out / "clusters.png"),
            "sizes_file": str(out / "cluster_sizes.json")}
