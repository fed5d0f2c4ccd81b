"""The Python API of the collection commands: ``nolabel.embed``, ``nolabel.neighbors``,
``nolabel.duplicates``. Each returns plain tensors / arrays.

``model``: a run folder, an export folder, ``random:<backbone>``, ``pixels``, or a backbone
module (``nolabel.load_backbone(path)``). Images: a data spec (folder, archive, ``demo``,
``cifar10:DIR``; unreadable files skipped), an image file, a list of image files, or a
uint8 tensor (B, 3, S, S) / (3, S, S). Images are read at the model's side (shorter side
resized, centre crop), or at ``image_size``. Features of a data spec are cached in
``cache_dir`` (default: ``$NOLABEL_CACHE`` or ``~/.cache/nolabel/features``; ``use_cache=False``:
none).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nolabel.evaluate.models import FeatureModel, load_model
from nolabel.use.collection import Collection, check_model_fits, default_cache_dir, load_collection
from nolabel.use.duplicates import content_hashes
from nolabel.use.errors import UseError
from nolabel.use.inputs import as_model, embed_images, is_image_file, read_image_file, square_images

DEFAULT_SIZE = 224      # side for image files given to random:<backbone> without image_size


@dataclass
class _Embedded:
    features: torch.Tensor
    paths: list[str]
    model: FeatureModel
    size: int
    collection: Collection | None = None     # for a data spec
    pixels: torch.Tensor | None = None       # for tensors and files: uint8 (N, 3, S, S) as embedded

    def hashes(self) -> list[str]:
        """SHA-256 per row: of the file (of the decoded pixels for tensors, image files, demo)."""
        if self.collection is not None:
            return content_hashes(self.collection)
        return [hashlib.sha256(image.numpy().tobytes()).hexdigest() for image in self.pixels]


def _resolved(model, side: int | None, image_size: int | None, what: str) -> tuple[FeatureModel, int]:
    """A model for images given as tensors or files (side: the tensor's, None for files)."""
    m = as_model(model)
    built = image_size or side or DEFAULT_SIZE
    if isinstance(m, str):
        m = load_model(m, image_size=built)
    size = image_size or m.image_size or side or (built if m.network is not None else None)
    if size is None:
        raise UseError(f"{what}: {m.name} has no image size of its own; give image_size=")
    check_model_fits(m, size, f"image_size {size}" if image_size else what)
    return m, size


def _embed_any(model, images, role: str, *, image_size, batch_size, device, use_cache, cache_dir) -> _Embedded:
    if image_size is not None and image_size < 1:
        raise UseError(f"image_size {image_size}: must be a positive number of pixels")
    if isinstance(images, torch.Tensor):
        m, size = _resolved(model, images.shape[-1] if images.dim() >= 3 else None, image_size, role)
        x = square_images(images, size, role)
        return _Embedded(embed_images(m, x, batch_size, device), [f"{role}#{i}" for i in range(len(x))], m, size,
                         pixels=x)
    if isinstance(images, (list, tuple)) or is_image_file(images):
        files = [images] if is_image_file(images) else list(images)
        if not files:
            raise UseError(f"{role}: the list of image files is empty")
        m, size = _resolved(model, None, image_size, role)
        x = torch.stack([read_image_file(f, size, role) for f in files])
        return _Embedded(embed_images(m, x, batch_size, device), [str(f) for f in files], m, size, pixels=x)
    if not isinstance(images, (str, Path)):
        raise UseError(f"{role}: got a {type(images).__name__}; give a data spec, an image path, a list of image "
                       "paths or a uint8 tensor (B, 3, S, S)")
    found = load_collection(as_model(model), str(images), image_size=image_size, batch_size=batch_size,
                            device=device, progress=False, role=role, size_option="image_size",
                            cache_dir=(cache_dir or default_cache_dir()) if use_cache else None)
    return _Embedded(found.features, found.keys, found.model, found.image_size, collection=found)


def embed(model, images_or_spec, *, pca: int | None = None, image_size: int | None = None, batch_size: int = 256,
          device: str | torch.device = "cpu", use_cache: bool = True, cache_dir=None, return_paths: bool = False):
    """float32 (N, D) embeddings of the images, in order (for a data spec: its readable
    images in dataset order); ``pca``: projected onto the top ``pca`` principal components.
    ``return_paths=True``: also the N paths, as ``(embeddings, paths)``."""
    from nolabel.use.embed import check_pca, pca as project

    check_pca(pca, "pca")
    found = _embed_any(model, images_or_spec, "images", image_size=image_size, batch_size=batch_size,
                       device=device, use_cache=use_cache, cache_dir=cache_dir)
    x = project(found.features, pca, "pca")[0] if pca is not None else found.features
    return (x, found.paths) if return_paths else x


def neighbors(model, query, data, k: int = 10, *, image_size: int | None = None, batch_size: int = 256,
              device: str | torch.device = "cpu", use_cache: bool = True, cache_dir=None,
              return_paths: bool = False):
    """The ``k`` images of ``data`` most cosine-similar to each query image: (similarities
    float32 (Q, k), indices int64 (Q, k)) into ``embed(model, data)``'s rows, nearest first
    (exact search below a million images). ``return_paths=True``: also the paths of
    ``data``'s rows, as ``(similarities, indices, paths)``."""
    from nolabel.use.neighbors import cosine_neighbors

    options = dict(image_size=image_size, batch_size=batch_size, device=device, use_cache=use_cache,
                   cache_dir=cache_dir)
    bank = _embed_any(model, data, "data", **options)
    options["image_size"] = bank.size
    queries = _embed_any(bank.model, query, "query", **options)
    sims, idx, _ = cosine_neighbors(queries.features, bank.features, k)
    return (sims, idx, bank.paths) if return_paths else (sims, idx)


def duplicates(model, data, threshold: float | None = None, *, image_size: int | None = None,
               batch_size: int = 256, device: str | torch.device = "cpu", use_cache: bool = True,
               cache_dir=None) -> list[np.ndarray]:
    """Groups of near-duplicate images of ``data`` (rows of ``embed(model, data)``, each
    group sorted, largest first): linked by cosine >= ``threshold`` (None: derived from the
    collection, see :func:`nolabel.use.duplicates.default_threshold`) or identical bytes
    (identical pixels for tensors and image files)."""
    from nolabel.use.duplicates import check_threshold, find_duplicates

    check_threshold(threshold, "threshold")
    found = _embed_any(model, data, "data", image_size=image_size, batch_size=batch_size, device=device,
                       use_cache=use_cache, cache_dir=cache_dir)
    return find_duplicates(found.features, found.hashes(), threshold).groups
