"""Few-label subsets for semi-supervised evaluation (thesis Table 4.1: ImageNet with 1%
and 10% of the labels; Table 5.5: "Inet 10%", "Inet 1%", "Pl. 1%").

:func:`label_subset` draws a stratified, seeded subset of a labelled set: in every
class, ``round(fraction * class count)`` items (half rounds up), at least one and at
most all of them. A subset is saved as JSON with the labels' fingerprint, and
:func:`load_subset` refuses to apply it to any other labels, so that a subset is
never silently used on another dataset (or another ordering of the same one).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

FORMAT = "nolabel.subset/1"


def _labels(labels, name: str = "labels") -> np.ndarray:
    y = torch.as_tensor(labels).detach().cpu()
    if y.ndim != 1 or y.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 1-D tensor of class indices, got shape {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class indices, got {y.dtype}")
    if bool((y < 0).any()):
        raise ValueError(f"{name} contains negative labels (-1 = unlabelled): a label subset needs every label")
    return y.long().numpy()


def labels_fingerprint(labels) -> str:
    """SHA-256 (hex) of the labels (N,) as little-endian int64: changes with any label,
    the length or the order of the items."""
    return hashlib.sha256(_labels(labels).astype("<i8").tobytes()).hexdigest()


def class_counts(labels, num_classes: int | None = None) -> list[int]:
    """Items per class, ``counts[c] = #{n : labels_n = c}`` for c in ``[0, C)``."""
    return np.bincount(_labels(labels), minlength=num_classes or 0).tolist()


def label_subset(labels, fraction: float, seed: int = 0) -> Tensor:
    """Stratified few-label subset: sorted int64 indices (n,) into ``labels`` (N,).

    Class c contributes ``min(count_c, max(1, floor(fraction * count_c + 0.5)))`` items
    chosen uniformly at random (numpy ``default_rng(seed)``). For one seed, subsets are
    nested: every item of a smaller fraction's subset is in a larger fraction's subset.
    """
    y = _labels(labels)
    if not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    order = np.random.default_rng(int(seed)).permutation(y.shape[0])  # one random order for all classes
    grouped = order[np.argsort(y[order], kind="stable")]  # items grouped by class, random within a class
    counts = np.bincount(y)
    take = np.minimum(counts, np.maximum(1, np.floor(fraction * counts + 0.5).astype(np.int64)))
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])  # first position of each class in `grouped`
    position = np.arange(y.shape[0]) - start[y[grouped]]  # rank of each item inside its class
    chosen = grouped[position < take[y[grouped]]]
    return torch.from_numpy(np.sort(chosen)).long()


def _indices(indices, n_total: int, where: str) -> np.ndarray:
    idx = torch.as_tensor(indices).detach().cpu()
    if idx.ndim != 1 or idx.is_floating_point() or idx.dtype == torch.bool:
        raise ValueError(f"{where}: indices must be a 1-D integer tensor, got {idx.dtype} of shape {tuple(idx.shape)}")
    idx = np.sort(idx.long().numpy())
    if idx.size and (idx[0] < 0 or idx[-1] >= n_total):
        raise ValueError(f"{where}: indices must lie in [0, {n_total}), got {int(idx[0])}..{int(idx[-1])}")
    if idx.size != np.unique(idx).size:
        raise ValueError(f"{where}: indices contain duplicates")
    return idx


def save_subset(path: str | Path, indices, labels, *, fraction: float | None = None, seed: int | None = None,
                meta: dict | None = None) -> dict:
    """Write a subset as JSON (atomically) and return the record written.

    Args:
        path: the JSON file (parent folders are created).
        indices: (n,) int indices into ``labels`` (stored sorted).
        labels: (N,) int64 labels of the whole set the indices point into; their
            fingerprint, length and per-class counts are stored with the subset.
        fraction, seed: how it was drawn (None for a subset from elsewhere).
        meta: any JSON-serialisable dict (e.g. the data spec), stored as ``meta``.

    The record: ``{"format", "fraction", "seed", "n", "n_total", "num_classes",
    "per_class" (subset items per class), "labels_sha256", "meta", "indices"}``.
    """
    path = Path(path)
    y = _labels(labels)
    idx = _indices(indices, y.shape[0], str(path))
    num_classes = int(y.max()) + 1
    record = {"format": FORMAT, "fraction": None if fraction is None else float(fraction),
              "seed": None if seed is None else int(seed), "n": int(idx.size), "n_total": int(y.shape[0]),
              "num_classes": num_classes, "per_class": class_counts(y[idx], num_classes),
              "labels_sha256": labels_fingerprint(y), "meta": dict(meta or {}), "indices": idx.tolist()}
    try:
        text = json.dumps(record)
    except TypeError as err:
        raise ValueError(f"meta must be JSON-serialisable: {err}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)
    return record


def load_subset(path: str | Path, labels) -> tuple[Tensor, dict]:
    """Read a subset written by :func:`save_subset`, checked against ``labels`` (N,).

    Returns ``(indices, record)``: sorted int64 indices (n,) and the stored record
    without its ``indices``. Raises ValueError naming the file when the labels are not
    the ones the subset was made for (other length, other fingerprint) or when the file
    is not a consistent subset file.
    """
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not a subset file (invalid JSON: {err})") from None
    missing = [k for k in ("format", "n", "n_total", "per_class", "labels_sha256", "indices")
               if not isinstance(record, dict) or k not in record]
    if missing or record["format"] != FORMAT:
        detail = f" (missing {', '.join(missing)})" if missing else ""
        raise ValueError(f"{path}: not a {FORMAT} subset file{detail}")
    y = _labels(labels)
    if y.shape[0] != record["n_total"]:
        raise ValueError(f"{path}: this subset was made for a labelled set of {record['n_total']} items, but the "
                         f"labels given have {y.shape[0]}; it cannot be applied to this dataset")
    if labels_fingerprint(y) != record["labels_sha256"]:
        raise ValueError(f"{path}: this subset was made for other labels (sha256 {record['labels_sha256'][:12]}...) "
                         f"than the ones given ({labels_fingerprint(y)[:12]}...): another dataset or another item "
                         "order; refusing to apply it")
    idx = _indices(torch.as_tensor(record["indices"], dtype=torch.long), y.shape[0], str(path))
    if idx.size != record["n"] or class_counts(y[idx], len(record["per_class"])) != record["per_class"]:
        raise ValueError(f"{path}: inconsistent subset file (indices disagree with the stored n or per_class)")
    return torch.from_numpy(idx).long(), {k: v for k, v in record.items() if k != "indices"}
