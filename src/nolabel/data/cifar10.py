"""CIFAR-10 in its official *python* format, downloaded on first use.

Expected files (either directly in ``DIR`` or in ``DIR/cifar-10-batches-py``):
``data_batch_1`` ... ``data_batch_5``, ``test_batch`` and ``batches.meta``, each
a pickle with ``data`` (uint8 (n, 3072), channel-major 32x32) and ``labels``.
"""

from __future__ import annotations

import hashlib
import pickle
import shutil
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nolabel.data.errors import DataError

__all__ = ["CIFAR10_URL", "CIFAR10_MD5", "CifarSplit", "load_cifar10", "fetch_url"]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
_ARCHIVE_NAME = "cifar-10-python.tar.gz"
_SUBDIR = "cifar-10-batches-py"
_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_DEFAULT_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                    "dog", "frog", "horse", "ship", "truck"]


@dataclass
class CifarSplit:
    """One loaded split: ``images`` uint8 (N, 3, 32, 32), ``labels`` int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    keys: list[str]


def fetch_url(url: str, destination: Path, timeout: float = 60.0) -> None:
    """Download ``url`` to ``destination`` (written as ``.part`` then renamed)."""
    partial = destination.with_name(destination.name + ".part")
    with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
        shutil.copyfileobj(response, out, length=1 << 20)
    partial.replace(destination)


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _find_batches(directory: Path) -> Path | None:
    for candidate in (directory / _SUBDIR, directory):
        if (candidate / "test_batch").is_file() or (candidate / "data_batch_1").is_file():
            return candidate
    return None


def _download(directory: Path, spec: str) -> None:
    """Download and extract the official archive into ``directory``."""
    advice = (f"Download {CIFAR10_URL} by hand and either put {_ARCHIVE_NAME} in {directory} "
              f"or extract it there so that {directory / _SUBDIR / 'data_batch_1'} exists.")
    archive = directory / _ARCHIVE_NAME
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if not archive.is_file():
            fetch_url(CIFAR10_URL, archive)
    except OSError as err:  # URLError, socket timeouts and HTTP errors are OSErrors
        raise DataError(f"{spec!r}: CIFAR-10 not found in {directory} and downloading it failed "
                        f"({err}); this machine looks offline. {advice}") from None
    if _md5(archive) != CIFAR10_MD5:
        raise DataError(f"{spec!r}: {archive} has the wrong md5 (expected {CIFAR10_MD5}); "
                        f"delete it and retry. {advice}")
    with tarfile.open(archive, "r:gz") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(directory, filter="data")
        else:  # pragma: no cover - Python without extraction filters
            tar.extractall(directory)


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as handle:
        raw = pickle.load(handle, encoding="bytes")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}


def _class_names(folder: Path) -> list[str]:
    meta_path = folder / "batches.meta"
    if not meta_path.is_file():
        return list(_DEFAULT_CLASSES)
    names = _unpickle(meta_path).get("label_names", _DEFAULT_CLASSES)
    return [name.decode() if isinstance(name, bytes) else str(name) for name in names]


def load_cifar10(directory: Path, split: str, spec: str) -> CifarSplit:
    """Load one CIFAR-10 split from ``directory``, downloading it when absent.

    Args:
        directory: folder holding (or to receive) the python-format batches.
        split: ``"train"`` or ``"test"``.
        spec: the user's data spec, for error messages.

    Raises:
        DataError: files missing and download impossible, or malformed batches.
    """
    folder = _find_batches(directory)
    if folder is None:
        _download(directory, spec)
        folder = _find_batches(directory)
        if folder is None:
            raise DataError(f"{spec!r}: extracted {_ARCHIVE_NAME} in {directory} but found no "
                            f"{_SUBDIR}/data_batch_1 or test_batch")
    images, labels, keys = [], [], []
    for name in _BATCHES[split]:
        path = folder / name
        if not path.is_file():
            raise DataError(f"{spec!r}: missing CIFAR-10 file {path}; expected "
                            f"{', '.join(_BATCHES[split])} in {folder}")
        try:
            batch = _unpickle(path)
            data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            batch_labels = np.asarray(batch["labels"], dtype=np.int64).reshape(-1)
        except (KeyError, ValueError, pickle.UnpicklingError, EOFError) as err:
            raise DataError(f"{spec!r}: {path} is not a CIFAR-10 python batch ({err!r})") from None
        if len(batch_labels) != len(data):
            raise DataError(f"{spec!r}: {path} has {len(data)} images "
                            f"but {len(batch_labels)} labels")
        images.append(data)
        labels.append(batch_labels)
        keys.extend(f"{name}#{i}" for i in range(len(data)))
    return CifarSplit(
        images=torch.from_numpy(np.concatenate(images)),
        labels=torch.from_numpy(np.concatenate(labels)),
        classes=_class_names(folder),
        keys=keys,
    )
