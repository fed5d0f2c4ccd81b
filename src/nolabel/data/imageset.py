"""``ImageSet``: what training loops and evaluators consume.

``open_images(spec)`` opens a data spec (see :mod:`nolabel.data.specs`),
settles the image size, and either preloads every image decoded at that size
into one uint8 tensor or streams them through a DataLoader. Either way
:meth:`ImageSet.batches` yields :class:`Batch` objects in an order that depends
only on ``(seed, epoch)`` and can resume at any step.

Resizing policy everywhere: shorter side to ``image_size`` (bicubic, antialiased),
then centre crop to ``image_size x image_size``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from nolabel.data.batch import Batch
from nolabel.data.errors import DataError
from nolabel.data.loading import decode_batches, preload, probe_source, resize_masks, resize_square
from nolabel.data.sampling import epoch_order, items_per_rank, num_steps, rank_order
from nolabel.data.sources import Source
from nolabel.data.specs import open_source
from nolabel.data.subset import SubsetSource

__all__ = ["Batch", "ImageSet", "open_images", "probe_image_size"]


class ImageSet:
    """A dataset of square uint8 images with optional labels and object masks.

    Attributes:
        spec: the data spec it was opened from.
        image_size: side S of every image.
        classes: class names when labelled, else None.
        has_labels: True when items carry class labels (else every label is -1).
        has_masks: True when batches carry object masks (demo).
        in_memory: True when all images are held decoded in one tensor.
        bad: every skipped item found so far as (location, reason), without duplicates.
        upscaled: every item found so far that was kept but enlarged more than
            ``loading.MAX_UPSCALE`` times, as (location, "upscaled from WxH ..."), without duplicates.
        num_workers: default number of decoding processes when streaming.
    """

    def __init__(self, spec: str, source: Source, image_size: int, labels: torch.Tensor,
                 keys: list[str], images: torch.Tensor | None = None,
                 masks: torch.Tensor | None = None, bad: list[tuple[str, str]] | None = None,
                 num_workers: int = 0, upscaled: list[tuple[str, str]] | None = None) -> None:
        self.spec = spec
        self.image_size = image_size
        self.classes = source.classes
        self.in_memory = images is not None
        self.has_labels = self.classes is not None and bool((labels >= 0).any())
        self.has_masks = masks is not None
        self.num_workers = num_workers
        self.keys = keys
        self.bad: list[tuple[str, str]] = []
        self._seen_bad: set[tuple[str, str]] = set()
        self._source = source if images is None else None  # only needed to stream
        self._labels = labels
        self._images = images
        self._masks = masks
        self._record_bad(bad or [])
        self.upscaled: list[tuple[str, str]] = []
        self._seen_upscaled: set[tuple[str, str]] = set()
        self._record_upscaled(upscaled or [])

    def __len__(self) -> int:
        return len(self._labels)

    def __repr__(self) -> str:
        mode = "in memory" if self.in_memory else "streamed"
        return (f"ImageSet({self.spec!r}, {len(self)} images {self.image_size}px {mode}, "
                f"classes={len(self.classes) if self.classes else None}, bad={len(self.bad)})")

    def _record_bad(self, items: list[tuple[str, str]]) -> None:
        for item in items:
            if item not in self._seen_bad:
                self._seen_bad.add(item)
                self.bad.append(item)

    def _record_upscaled(self, items: list[tuple[str, str]]) -> None:
        for item in items:
            if item not in self._seen_upscaled:
                self._seen_upscaled.add(item)
                self.upscaled.append(item)

    @property
    def decoded_bytes(self) -> int:
        """Bytes of the decoded images held in memory (0 when streamed)."""
        return 0 if self._images is None else self._images.numel() * self._images.element_size()

    @property
    def device(self) -> torch.device:
        """Where the decoded images are (the CPU when streamed)."""
        return torch.device("cpu") if self._images is None else self._images.device

    def to_device(self, device: torch.device | str) -> ImageSet:
        """Keep the decoded images (and masks) on ``device``: batches are then drawn there,
        with no host-to-device copy of pixels per step (issue 14; CIFAR-10's 50,000 images
        are 150 MB). In-memory sets only. Returns ``self``."""
        if self._images is None:
            raise DataError(f"data spec {self.spec!r} is streamed from disk: only a set held in memory "
                            "(--data.in_memory=true) can live on the device")
        self._images = self._images.to(device)
        self._masks = None if self._masks is None else self._masks.to(device)
        return self

    def labels_tensor(self) -> torch.Tensor:
        """int64 (N,): all labels in dataset order (-1 where unlabelled)."""
        return self._labels.clone()

    def subset(self, indices: list[int], progress: bool = False) -> ImageSet:
        """The items at ``indices`` (positions in this set, kept in the given order) as
        a new in-memory set: sliced when this one is in memory, else decoded once here
        (unreadable items skipped and listed in the new set's ``bad``)."""
        idx = [int(i) for i in indices]
        if self._images is not None:
            index = torch.tensor(idx, dtype=torch.long)
            keys = [self.keys[i] for i in idx]
            labels = self._labels.index_select(0, index)
            at = index.to(self._images.device)
            return ImageSet(self.spec, Source(self.spec, keys, labels.tolist(), self.classes), self.image_size,
                            labels, keys, images=self._images.index_select(0, at),
                            masks=None if self._masks is None else self._masks.index_select(0, at),
                            num_workers=self.num_workers)
        source = SubsetSource(self.spec, self._source, idx)
        upscaled: list[tuple[str, str]] = []
        images, kept, bad = preload(source, self.image_size, self.num_workers, progress, upscaled)
        if not kept:
            raise DataError(f"data spec {self.spec!r}: every one of the {len(idx)} files chosen is "
                            f"unreadable, e.g. {bad[0][0]}: {bad[0][1]}")
        labels = torch.tensor(source.labels, dtype=torch.int64)[kept]
        return ImageSet(self.spec, source, self.image_size, labels, [source.keys[i] for i in kept],
                        images=images, bad=bad, num_workers=self.num_workers, upscaled=upscaled)

    def steps_per_epoch(self, batch_size: int, drop_last: bool = True, world_size: int = 1) -> int:
        """Number of batches :meth:`batches` yields per epoch on each rank."""
        per_rank = items_per_rank(len(self), world_size, drop_last)
        return num_steps(per_rank, batch_size, drop_last)

    def batches(self, batch_size: int, *, shuffle: bool, seed: int = 0, epoch: int = 0,
                start_step: int = 0, drop_last: bool = True, rank: int = 0, world_size: int = 1,
                num_workers: int | None = None, pin_memory: bool = False) -> Iterator[Batch]:
        """Yield one epoch of batches for this rank.

        Args:
            batch_size: items per batch (per rank).
            shuffle: draw the epoch order from a generator seeded by (seed, epoch)
                only; otherwise dataset order.
            seed, epoch: select the permutation.
            start_step: skip this many batches of this rank's shard (not decoded).
            drop_last: drop a final incomplete batch; also truncates (instead of
                pads by wrapping around) the epoch so it splits evenly over ranks.
            rank, world_size: this process's shard (disjoint, equal sizes).
            num_workers: decoding processes when streaming (default: the value
                given to :func:`open_images`); ignored in memory.
            pin_memory: streamed batches in page-locked memory (for a GPU: their copy
                then overlaps the step before); ignored in memory.

        Yields:
            :class:`Batch` with images uint8 (B, 3, S, S). When streaming, bad
            files are dropped so B can be smaller than ``batch_size``, never 0:
            a batch whose every item is bad is skipped (so fewer than
            :meth:`steps_per_epoch` batches come out) and its ``bad`` entries
            are carried into the next batch's ``bad``.
        """
        if start_step < 0:
            raise ValueError(f"start_step must be >= 0, got {start_step}")
        order = rank_order(epoch_order(len(self), shuffle, seed, epoch), rank, world_size,
                           drop_last)
        steps = num_steps(len(order), batch_size, drop_last)
        chunks = [order[step * batch_size:(step + 1) * batch_size]
                  for step in range(start_step, steps)]
        if self._images is not None:
            yield from self._memory_batches(chunks)
            return
        workers = self.num_workers if num_workers is None else num_workers
        carried: list[tuple[str, str]] = []  # bad items of skipped all-bad batches
        for batch in decode_batches(self._source, self.image_size,
                                    [chunk.tolist() for chunk in chunks], workers, pin_memory):
            self._record_bad(batch.bad)
            self._record_upscaled(batch.upscaled)
            if len(self._seen_bad) >= len(self):
                raise DataError(f"data spec {self.spec!r}: every one of its {len(self)} files "
                                f"is unreadable, e.g. {self.bad[0][0]}: {self.bad[0][1]}")
            if len(batch) == 0:
                carried.extend(batch.bad)
                continue
            if carried:
                batch.bad, carried = carried + batch.bad, []
            yield batch

    def _memory_batches(self, chunks: list[torch.Tensor]) -> Iterator[Batch]:
        for index in chunks:
            at = index.to(self._images.device, non_blocking=True)   # a no-op unless on a device
            yield Batch(
                images=self._images.index_select(0, at),
                labels=self._labels.index_select(0, index),
                index=index,
                masks=None if self._masks is None else self._masks.index_select(0, at),
                bad=[],
            )


def probe_image_size(spec: str) -> int:
    """Default image size for a spec: stored size for in-memory sources; otherwise the
    median shorter side over up to 64 evenly spaced files, capped at 224, rounded
    down to a multiple of 8 and at least 16."""
    return probe_source(open_source(spec))


def open_images(spec: str, image_size: int | None = None, in_memory: bool | str = "auto",
                num_workers: int = 0, memory_limit_gb: float = 4.0,
                progress: bool = True) -> ImageSet:
    """Open a data spec as an :class:`ImageSet`.

    Args:
        spec: data spec (``demo``, a folder, an archive, ``cifar10:DIR``, ...).
        image_size: side of the square images; None -> :func:`probe_image_size`.
        in_memory: True to preload decoded images, False to stream, ``"auto"`` to
            preload when N * 3 * S * S bytes < ``memory_limit_gb`` GiB. Demo and
            cifar10 are always in memory.
        num_workers: decoding processes for preloading and streaming.
        memory_limit_gb: preload threshold for ``"auto"``.
        progress: show a progress bar while preloading.

    Raises:
        DataError: the spec cannot be opened or every file is unreadable.
    """
    if in_memory not in (True, False, "auto"):
        raise ValueError(f"in_memory must be True, False or 'auto', got {in_memory!r}")
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    source = open_source(spec)
    labels = torch.tensor(source.labels, dtype=torch.int64)
    if source.images is not None:
        size = image_size or int(source.images.shape[-1])
        masks = None if source.masks is None else resize_masks(source.masks, size)
        return ImageSet(spec, source, size, labels, list(source.keys),
                        images=resize_square(source.images, size), masks=masks,
                        num_workers=num_workers)
    probed = probe_source(source)  # also fails early when no file is an image
    size = image_size or probed
    wanted_bytes = len(source) * 3 * size * size
    if in_memory is False or (in_memory == "auto" and wanted_bytes >= memory_limit_gb * 2**30):
        return ImageSet(spec, source, size, labels, list(source.keys), num_workers=num_workers)
    upscaled: list[tuple[str, str]] = []
    images, kept, bad = preload(source, size, num_workers, progress, upscaled)
    if not kept:
        raise DataError(f"data spec {spec!r}: every one of its {len(source)} files is "
                        f"unreadable, e.g. {bad[0][0]}: {bad[0][1]}")
    keys = [source.keys[i] for i in kept]
    return ImageSet(spec, source, size, labels[kept], keys, images=images, bad=bad,
                    num_workers=num_workers, upscaled=upscaled)
