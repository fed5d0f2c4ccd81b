"""The kinds of :class:`Source`: an ordered list of items with keys and labels, read
from a folder, a tar archive (seekable or packed in memory) or held decoded in memory.
:func:`nolabel.data.specs.open_source` chooses the kind from a data spec.

File-backed sources give encoded bytes through :meth:`Source.read`; in-memory
sources (demo, cifar10) hold ready uint8 images instead. Every source is
picklable and safe to use in DataLoader worker processes: files are opened
lazily in each process.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["Source", "FolderSource", "TarSource", "PackedSource", "TensorSource"]


class Source:
    """An ordered list of items: ``keys[i]``, ``labels[i]`` (-1 = unlabelled).

    Attributes:
        name: the spec it was opened from.
        keys: per item, its relative path or member name.
        labels: per item, class index or -1.
        classes: class names when labelled, else None.
        images: uint8 (N, 3, S, S) for in-memory sources, else None.
        masks: bool (N, S, S) object masks when known (demo), else None.
    """

    def __init__(self, name: str, keys: list[str], labels: list[int],
                 classes: list[str] | None) -> None:
        self.name = name
        self.keys = keys
        self.labels = labels
        self.classes = classes
        self.images: torch.Tensor | None = None
        self.masks: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def in_memory(self) -> bool:
        return self.images is not None

    def read(self, index: int) -> bytes:
        """Encoded bytes of item ``index`` (file-backed sources only)."""
        raise NotImplementedError(f"{type(self).__name__} holds decoded images; use .images")

    def location(self, index: int) -> str:
        """Where item ``index`` lives, for messages (full path or archive:member)."""
        return f"{self.name}:{self.keys[index]}"


class FolderSource(Source):
    """Image files under a directory; ``keys`` are posix paths relative to ``root``."""

    def __init__(self, name: str, root: Path, keys: list[str], labels: list[int],
                 classes: list[str] | None) -> None:
        super().__init__(name, keys, labels, classes)
        self.root = root

    def read(self, index: int) -> bytes:
        with open(self.root / self.keys[index], "rb") as handle:
            return handle.read()

    def location(self, index: int) -> str:
        return str(self.root / self.keys[index])


class TarSource(Source):
    """Members of an uncompressed tar, read by seeking to indexed offsets.

    The file handle is opened lazily and re-opened in every new process (it is
    never pickled nor shared across ``fork``).
    """

    def __init__(self, name: str, path: Path, keys: list[str], labels: list[int],
                 classes: list[str] | None, spans: list[tuple[int, int]]) -> None:
        super().__init__(name, keys, labels, classes)
        self.path = path
        self.spans = spans  # (offset of data, size) per item
        self._handle = None
        self._pid = -1

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handle"], state["_pid"] = None, -1
        return state

    def read(self, index: int) -> bytes:
        if self._handle is None or self._pid != os.getpid():
            self._handle = open(self.path, "rb")  # noqa: SIM115 - kept open for seeks
            self._pid = os.getpid()
        offset, size = self.spans[index]
        self._handle.seek(offset)
        return self._handle.read(size)

    def location(self, index: int) -> str:
        return f"{self.path}:{self.keys[index]}"


class PackedSource(Source):
    """Members of a compressed tar, kept as encoded bytes in memory (decoded lazily)."""

    def __init__(self, name: str, path: Path, keys: list[str], labels: list[int],
                 classes: list[str] | None, blobs: list[bytes]) -> None:
        super().__init__(name, keys, labels, classes)
        self.path = path
        self.blobs = blobs

    def read(self, index: int) -> bytes:
        return self.blobs[index]

    def location(self, index: int) -> str:
        return f"{self.path}:{self.keys[index]}"


class TensorSource(Source):
    """Decoded images held in memory: ``images`` uint8 (N, 3, S, S), optional ``masks``."""

    def __init__(self, name: str, keys: list[str], labels: list[int],
                 classes: list[str] | None, images: torch.Tensor,
                 masks: torch.Tensor | None = None) -> None:
        super().__init__(name, keys, labels, classes)
        self.images = images
        self.masks = masks
