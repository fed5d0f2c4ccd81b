"""``nolabel embed``: one embedding per readable image of a collection, with its path.

The embedding is the model's feature as evaluation uses it (not normalised), optionally
projected onto its top ``--pca D`` principal components (centred, components from the
eigenvectors of the covariance; each component's sign fixed so its largest coefficient is
positive, which makes the output reproducible). Output by the suffix of ``--out``:

- ``FILE.npy``: float32 (N, D); beside it ``FILE.csv`` with ``row,path`` (and ``label``
  when the source has labels), row i of the CSV describing row i of the array;
- ``FILE.parquet`` (needs pyarrow): columns ``path`` (``label``) and ``embedding``
  (a list of D float32);
- either way ``FILE.json``: model, data, image size, dimensions, PCA (explained
  variance) and the unreadable files, which are skipped.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nolabel.use.collection import Collection, load_collection
from nolabel.use.errors import UseError
from nolabel.use.publish import csv_writer, json_writer, publish

SUFFIXES = (".npy", ".parquet")


def check_out_file(out: str | Path, option: str = "--out") -> Path:
    """The output path, refused before any work when its form is wrong."""
    path = Path(out).expanduser()
    if path.is_dir():
        raise UseError(f"{option} {out}: is a folder; give a file name ending in .npy or .parquet")
    if path.suffix.lower() not in SUFFIXES:
        raise UseError(f"{option} {out}: give a file name ending in .npy (with a .csv of paths beside it) "
                       "or .parquet")
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UseError(f"{option} {out}: writing .parquet needs pyarrow (pip install pyarrow); or give a "
                           ".npy file name") from None
    return path


def check_pca(dim: int | None, option: str = "--pca") -> None:
    if dim is not None and dim < 1:
        raise UseError(f"{option} {dim}: give a number of dimensions of at least 1")


def pca(x: torch.Tensor, dim: int, option: str = "--pca") -> tuple[torch.Tensor, dict]:
    """Project (N, D) features onto their top ``dim`` principal components: float32 (N, dim)
    and {"dim", "from_dim", "explained_variance_ratio"}."""
    n, d = x.shape
    if not 1 <= dim <= min(n, d):
        raise UseError(f"{option} {dim}: the {n} embeddings of {d} dimensions allow 1 to {min(n, d)} components")
    x64 = x.double()
    centred = x64 - x64.mean(0)
    covariance = centred.T @ centred / max(n - 1, 1)                      # (D, D)
    values, vectors = torch.linalg.eigh(covariance)                       # ascending
    values, vectors = values.flip(0).clamp_min(0), vectors.flip(1)[:, :dim]
    signs = torch.sign(vectors.gather(0, vectors.abs().argmax(0, keepdim=True)))
    vectors = vectors * torch.where(signs == 0, torch.ones_like(signs), signs)
    total = float(values.sum())
    explained = float(values[:dim].sum() / total) if total > 0 else 1.0
    return (centred @ vectors).float(), {"dim": dim, "from_dim": d, "explained_variance_ratio": round(explained, 6)}


def _npy_writer(array: np.ndarray):
    def write(path: Path) -> None:
        with open(path, "wb") as f:                 # np.save(path) would append .npy to the staging name
            np.save(f, array)
    return write


def _parquet_writer(array: np.ndarray, keys: list[str], labels: list[str] | None):
    def write(path: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = {"path": pa.array(keys, pa.string())}
        if labels is not None:
            columns["label"] = pa.array(labels, pa.string())
        flat = pa.array(array.reshape(-1), pa.float32())
        columns["embedding"] = pa.FixedSizeListArray.from_arrays(flat, array.shape[1])
        pq.write_table(pa.table(columns), path)
    return write


def write_embeddings(out: Path, array: np.ndarray, collection: Collection, summary: dict) -> list[Path]:
    labels = collection.label_names()
    files = {}
    if out.suffix.lower() == ".npy":
        files[out.name] = _npy_writer(array)
        rows = [[i, key] + ([labels[i]] if labels else []) for i, key in enumerate(collection.keys)]
        files[out.with_suffix(".csv").name] = csv_writer(["row", "path"] + (["label"] if labels else []), rows)
    else:
        files[out.name] = _parquet_writer(array, collection.keys, labels)
    files[out.with_suffix(".json").name] = json_writer(summary)
    return publish(out.parent, files)


def run_embed(model, data_spec: str, out, *, pca_dim: int | None = None, image_size: int | None = None,
              batch_size: int = 256, device="cpu", cache_dir=None, progress=False) -> dict:
    """The command: embed every readable image of ``data_spec`` and write the files of the
    module docstring. Returns the summary (``FILE.json``) with ``files`` added."""
    out = check_out_file(out)
    check_pca(pca_dim)
    collection = load_collection(model, data_spec, image_size=image_size, batch_size=batch_size, device=device,
                                 cache_dir=cache_dir, progress=progress)
    x, reduced = collection.features, None
    if pca_dim is not None:
        x, reduced = pca(x, pca_dim)
    summary = {"model": collection.model.name, "data": data_spec, "image_size": collection.image_size,
               "n_images": len(collection), "dim": int(x.shape[1]), "pca": reduced,
               "from_cache": collection.from_cache,
               "unreadable": [{"path": p, "reason": r} for p, r in collection.bad]}
    files = write_embeddings(out, x.numpy().astype(np.float32), collection, summary)
    return {**summary, "files": [str(f) for f in files]}
