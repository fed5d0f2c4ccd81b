"""A model's features of every readable image of a data spec, with the images' paths.

:func:`load_collection` resolves the model (:func:`nolabel.evaluate.models.load_model_for_data`),
checks that it reads images of the chosen size, and takes the features from the feature
cache of :mod:`nolabel.evaluate.cache` when the key matches (model weights, data spec and
its files' stamps, image size): a second command on the same model and collection decodes
nothing. Otherwise it opens the data (:func:`nolabel.data.open_images`: shorter side resized
to the model's size, centre crop, no augmentation), extracts the features in dataset order,
batched, with a progress bar, and caches them together with each row's path and the list of
unreadable files (skipped, never fatal). The feature kind is the model's plain feature (a
ViT's [CLS] token, a ResNet's pooled last stage, raw pixels), cache kind ``"none"``.

Cached records are a superset of :class:`nolabel.evaluate.context.EvalContext`'s (same key,
plus ``keys`` and ``bad``), so ``nolabel eval`` and these commands can share a cache folder.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from nolabel.data import DataError, ImageSet, open_images, open_source, probe_image_size
from nolabel.data.loading import preload, resize_square
from nolabel.data.sources import Source
from nolabel.data.subset import SubsetSource
from nolabel.evaluate import cache
from nolabel.evaluate.models import FeatureModel, load_model_for_data
from nolabel.use.errors import UseError

FEATURE_KIND = "none"


def default_cache_dir() -> Path:
    """``$NOLABEL_CACHE``, else ``$XDG_CACHE_HOME/nolabel/features`` (``~/.cache/...``)."""
    if os.environ.get("NOLABEL_CACHE"):
        return Path(os.environ["NOLABEL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "nolabel" / "features"


def data_error(role: str, spec: str, err: DataError) -> UseError:
    """A data layer error as one line naming the option (its list of accepted specs shortened)."""
    lines = str(err).splitlines()
    return UseError(f"{role} {spec}: {lines[0] if lines else err} (give a folder, .tar/.tar.gz or .txt/.csv list of images, "
                    "flat:PATH, cifar10:DIR or demo)")


@dataclass
class Collection:
    """Features of the readable images of ``spec``, in dataset order.

    features: float32 (M, D); labels: int64 (M,), -1 where unlabelled; keys: M paths (as
    the data layer names items: relative to a folder, archive member names, ``demo:train#i``);
    bad: (location, reason) of every unreadable file, skipped."""
    spec: str
    model: FeatureModel
    image_size: int
    features: Tensor
    labels: Tensor
    keys: list[str]
    classes: list[str] | None
    bad: list[tuple[str, str]]
    from_cache: bool
    data: ImageSet | None = None
    _source: Source | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def has_labels(self) -> bool:
        return self.classes is not None and bool((self.labels >= 0).any())

    def label_names(self) -> list[str] | None:
        """Class name per row ("" where unlabelled), or None for an unlabelled collection."""
        if not self.has_labels:
            return None
        return [self.classes[y] if y >= 0 else "" for y in self.labels.tolist()]

    def source(self) -> Source:
        """The spec's item list (opened once, nothing decoded): file bytes for hashing."""
        if self._source is None:
            self._source = open_source(self.spec)
        return self._source

    def images(self, rows) -> Tensor:
        """uint8 (n, 3, S, S) images of the given rows, decoding only those (grey where a
        file has become unreadable since its features were cached)."""
        rows = [int(r) for r in rows]
        size = self.image_size
        out = torch.full((len(rows), 3, size, size), 128, dtype=torch.uint8)
        if not rows:
            return out
        if self.data is not None and self.data.in_memory:      # opened for the features: slice it
            where = {k: i for i, k in enumerate(self.data.keys)}
            picked = self.data.subset([where[self.keys[r]] for r in rows])
            for batch in picked.batches(len(rows), shuffle=False, drop_last=False):
                out[batch.index] = batch.images
            return out
        source = self.source()
        where = {k: i for i, k in enumerate(source.keys)}
        wanted = [(j, where[self.keys[r]]) for j, r in enumerate(rows) if self.keys[r] in where]
        if not wanted:
            return out
        slots, indices = zip(*wanted)
        if source.images is not None:
            out[list(slots)] = resize_square(source.images[list(indices)], size)
            return out
        images, kept, _ = preload(SubsetSource(self.spec, source, list(indices)), size, 0, False)
        out[[slots[i] for i in kept]] = images
        return out


def check_model_fits(model: FeatureModel, size: int, what: str) -> None:
    """One forward pass of a blank image at ``size``: a model that cannot read that size (a
    ViT whose patch size does not divide it, ...) is refused with ``what`` in the message."""
    if model.network is None:
        return
    param = next(model.network.parameters(), None)
    blank = torch.zeros(1, 3, size, size, dtype=torch.uint8,
                        device=param.device if param is not None else "cpu")
    was_training = model.network.training
    model.network.eval()
    try:
        model.features(blank)
    except (ValueError, RuntimeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        own = f" (it was made for {model.image_size} px)" if model.image_size else ""
        todo = (f"; leave the size out to read images at {model.image_size} px" if model.image_size
                else "; give a size it accepts")
        raise UseError(f"{what}: the model {model.name} cannot read {size}x{size} images{own}: {reason}{todo}") \
            from None
    finally:
        model.network.train(was_training)


@torch.no_grad()
def extract(model: FeatureModel, data: ImageSet, batch_size: int, device, progress: bool | None = False,
            desc: str = "features") -> tuple[Tensor, Tensor, Tensor]:
    """(features float32 (M, D), labels int64 (M,), positions in ``data`` (M,)) of the
    readable images, in dataset order, on CPU; unreadable files are skipped (``data.bad``).
    ``progress=None`` shows the bar on a terminal only."""
    from tqdm import tqdm

    model.to(device)
    feats, labels, index = [], [], []
    with tqdm(total=len(data), desc=desc, unit="img", disable=None if progress is None else not progress,
              leave=False, dynamic_ncols=True) as bar:
        for batch in data.batches(batch_size, shuffle=False, drop_last=False):
            feats.append(model.features(batch.images.to(device)).float().cpu())
            labels.append(batch.labels)
            index.append(batch.index)
            bar.update(len(batch) + len(batch.bad))
    if not feats:
        raise DataError(f"data spec {data.spec!r}: no readable images")
    return torch.cat(feats), torch.cat(labels), torch.cat(index)


def resolve_model(model: str | FeatureModel, spec: str, image_size: int | None, role: str,
                  size_option: str) -> tuple[FeatureModel, int]:
    """(model, image side) for reading ``spec``; refuses a size the model cannot read."""
    if image_size is not None and image_size < 1:
        raise UseError(f"{size_option} {image_size}: must be a positive number of pixels")
    try:
        if isinstance(model, FeatureModel):
            size = image_size or model.image_size or probe_image_size(spec)
        else:
            model, size = load_model_for_data(model, spec, image_size)
    except DataError as err:
        raise data_error(role, spec, err) from None
    what = f"{size_option} {size}" if image_size else f"{role} {spec} (read at {size} px)"
    check_model_fits(model, size, what)
    return model, size


def load_collection(model: str | FeatureModel, spec: str, *, image_size: int | None = None,
                    batch_size: int = 256, device: str | torch.device = "cpu", cache_dir: str | Path | None = None,
                    progress: bool | None = False, role: str = "--data",
                    size_option: str = "--image-size") -> Collection:
    """Features of every readable image of ``spec`` with ``model`` (a model spec or a
    :class:`FeatureModel`), from the cache in ``cache_dir`` when it holds them (None: no
    cache). ``role`` and ``size_option`` name the options in error messages.

    Raises:
        UseError: the spec cannot be opened, holds no readable image, or the model cannot
            read images of the chosen size.
    """
    if batch_size < 1:
        raise UseError(f"--batch-size {batch_size}: must be at least 1")
    model, size = resolve_model(model, spec, image_size, role, size_option)
    key = path = None
    if cache_dir is not None:
        key = cache.cache_key(model.name, cache.weights_digest(model.network), spec, size, FEATURE_KIND)
        path = cache.cache_path(cache_dir, key)
        record = cache.load_cached(path, key)
        if record is not None and "keys" in record:
            return Collection(spec, model, size, record["features"], record["labels"], list(record["keys"]),
                              record["classes"], [tuple(b) for b in record["bad"]], True)
    try:
        data = open_images(spec, image_size=size, progress=sys.stderr.isatty() if progress is None else progress)
        t0 = time.time()
        feats, labels, positions = extract(model, data, batch_size, device, progress, f"features of {spec}")
    except DataError as err:
        raise data_error(role, spec, err) from None
    keys = [data.keys[i] for i in positions.tolist()]
    classes = list(data.classes) if data.classes else None
    if path is not None:
        cache.save_cached(path, key, {
            "features": feats, "labels": labels, "classes": classes, "has_labels": bool(data.has_labels),
            "has_masks": bool(data.has_masks), "n_bad": len(data.bad), "seconds": round(time.time() - t0, 2),
            "keys": keys, "bad": [list(b) for b in data.bad]})
    return Collection(spec, model, size, feats, labels, keys, classes, list(data.bad), False, data)
