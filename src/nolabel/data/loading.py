"""Decoding file-backed sources: per-item decoding, DataLoader batching, preloading, probing.

Bad files never crash anything here: an item that fails to read or decode is
returned as ``(location, reason)`` and dropped from its batch by the collate
function. An image enlarged more than ``MAX_UPSCALE`` times to reach the image size (a
1x1 file, a thumbnail) is kept, with a ``(location, "upscaled from WxH ...")`` note that
the collate function lists in ``Batch.upscaled``.
"""

from __future__ import annotations

import io
import statistics
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from nolabel.data.batch import Batch
from nolabel.data.decode import BadImageError, decode_image, to_square_uint8
from nolabel.data.errors import DataError
from nolabel.data.sources import Source

__all__ = ["DecodedItems", "collate_items", "decode_batches", "preload",
           "resize_square", "probe_source", "MAX_PROBED_SIZE"]

MAX_PROBED_SIZE = 224
MAX_UPSCALE = 4          # enlarging a shorter side more than this many times is noted
_PROBE_ITEMS = 64
_PRELOAD_CHUNK = 256

# One decoded item: (source index, uint8 (3, S, S) or None, label, (location, reason) or None);
# the (location, reason) of an item with an image is a note (upscaled), of one without it why it was skipped
Item = tuple[int, torch.Tensor | None, int, tuple[str, str] | None]


class DecodedItems(Dataset):
    """Map-style dataset decoding item ``i`` of a file-backed source at ``size``."""

    def __init__(self, source: Source, size: int) -> None:
        self.source = source
        self.size = size

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Item:
        label = self.source.labels[index]
        try:
            data = self.source.read(index)
        except OSError as err:
            return index, None, label, (self.source.location(index), f"unreadable ({err})")
        try:
            image = decode_image(data, self.source.keys[index], min_size=self.size)
            width, height = image.size
            note = None
            if self.size > MAX_UPSCALE * min(width, height):
                note = (self.source.location(index), f"upscaled from {width}x{height} (used, not skipped)")
            return index, to_square_uint8(image, self.size), label, note
        except BadImageError as err:
            return index, None, label, (self.source.location(index), err.reason)


def collate_items(items: list[Item]) -> Batch:
    """Stack the good items of a batch; list the bad ones in ``Batch.bad`` and the
    upscaled ones in ``Batch.upscaled``."""
    good = [item for item in items if item[1] is not None]
    bad = [item[3] for item in items if item[1] is None]
    if good:
        images = torch.stack([item[1] for item in good])
    else:  # size unknown here; decode_batches reshapes it to (0, 3, S, S)
        images = torch.empty((0, 3, 0, 0), dtype=torch.uint8)
    return Batch(
        images=images,
        labels=torch.tensor([item[2] for item in good], dtype=torch.int64),
        index=torch.tensor([item[0] for item in good], dtype=torch.int64),
        masks=None,
        bad=bad,
        upscaled=[item[3] for item in good if item[3] is not None],
    )


def decode_batches(source: Source, size: int, index_batches: Sequence[Sequence[int]],
                   num_workers: int, pin_memory: bool = False) -> Iterator[Batch]:
    """Decode the given batches of source indices, in order, with ``num_workers`` processes
    (``pin_memory``: batches in page-locked memory, for copies to a GPU that overlap compute).

    Yields:
        one :class:`Batch` per entry of ``index_batches`` (bad items dropped).
    """
    if not index_batches:
        return
    loader = DataLoader(
        DecodedItems(source, size),
        batch_sampler=[list(batch) for batch in index_batches],
        num_workers=num_workers,
        collate_fn=collate_items,
        pin_memory=pin_memory,
        # A private generator: otherwise every new iterator draws its base seed from
        # torch's global RNG, which the augmentations use, and a resumed run would
        # see different views from an uninterrupted one.
        generator=torch.Generator().manual_seed(0),
    )
    for batch in loader:
        if batch.images.shape[-1] != size:  # an all-bad batch
            batch.images = torch.empty((0, 3, size, size), dtype=torch.uint8)
        yield batch


def preload(source: Source, size: int, num_workers: int, progress: bool,
            upscaled: list[tuple[str, str]] | None = None) -> tuple[torch.Tensor, list[int], list[tuple[str, str]]]:
    """Decode every item of a file-backed source into one tensor.

    Returns:
        images uint8 (K, 3, size, size) of the K good items in source order, their
        source indices (K,), and the (location, reason) of every bad item. The notes
        of kept items upscaled more than ``MAX_UPSCALE`` times are appended to
        ``upscaled`` when given.
    """
    n = len(source)
    images = torch.empty((n, 3, size, size), dtype=torch.uint8)
    chunks = [range(start, min(start + _PRELOAD_CHUNK, n)) for start in range(0, n, _PRELOAD_CHUNK)]
    kept: list[int] = []
    bad: list[tuple[str, str]] = []
    with tqdm(total=n, desc=f"decoding {source.name}", unit="img", disable=not progress,
              leave=False) as bar:
        for batch in decode_batches(source, size, chunks, num_workers):
            count = len(batch)
            images[len(kept):len(kept) + count] = batch.images
            kept.extend(batch.index.tolist())
            bad.extend(batch.bad)
            if upscaled is not None:
                upscaled.extend(batch.upscaled)
            bar.update(count + len(batch.bad))
    return images[:len(kept)], kept, bad


def resize_square(images: torch.Tensor, size: int, chunk: int = 1024) -> torch.Tensor:
    """Resize square uint8 images (N, C, H, H) to (N, C, size, size), bicubic with antialias."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = torch.empty((images.shape[0], images.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, images.shape[0], chunk):
        part = images[start:start + chunk].float()
        resized = F.interpolate(part, size=(size, size), mode="bicubic", antialias=True,
                                align_corners=False)
        out[start:start + chunk] = resized.round().clamp_(0, 255).to(torch.uint8)
    return out


def resize_masks(masks: torch.Tensor, size: int) -> torch.Tensor:
    """Resize bool masks (N, H, H) to (N, size, size): antialiased coverage >= 0.5."""
    if masks.shape[-1] == size:
        return masks
    coverage = F.interpolate(masks[:, None].float(), size=(size, size), mode="bilinear",
                             antialias=True, align_corners=False)
    return coverage[:, 0] >= 0.5


def _shorter_side(data: bytes) -> int | None:
    """min(width, height) read from the header only; None when unreadable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                return min(image.size)
    except Exception:
        return None


def probe_source(source: Source) -> int:
    """Image size for a source: its stored size when in memory, otherwise the median
    shorter side over up to 64 evenly spaced items, capped at 224, rounded down to a
    multiple of 8, at least 16.

    Raises:
        DataError: none of the sampled files has a readable image header.
    """
    if source.images is not None:
        return int(source.images.shape[-1])
    n = len(source)
    picks = sorted(set(np.linspace(0, n - 1, min(_PROBE_ITEMS, n)).round().astype(int).tolist()))
    sides = []
    for index in picks:
        try:
            side = _shorter_side(source.read(index))
        except OSError:
            side = None
        if side is not None and side > 0:
            sides.append(side)
    if not sides:
        raise DataError(f"data spec {source.name!r}: none of the {len(picks)} sampled files "
                        f"(e.g. {source.location(picks[0])}) could be read as an image")
    median = int(statistics.median_low(sides))
    return max(16, min(median, MAX_PROBED_SIZE) // 8 * 8)
