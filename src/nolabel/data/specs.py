"""Data specs -> :class:`~nolabel.data.sources.Source`: which kind of source a spec names, opened.

Accepted specs (see :data:`ACCEPTED_FORMS`):

* ``demo``, ``demo:train``, ``demo:test`` with optional ``?n=N&size=S&seed=K``;
* a directory (labelled when every image is ``root/<class>/<file>``, else flat);
* ``flat:PATH`` to force a directory or archive to be read as unlabelled;
* a ``.tar``, ``.tar.gz`` / ``.tgz`` archive of such a folder (a single shared
  top-level directory is stripped), read without unpacking;
* ``cifar10:DIR`` (train) and ``cifar10:DIR:test``, the official python format;
* a ``.txt`` / ``.csv`` list of image paths (see :mod:`nolabel.data.listfile`).
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

from nolabel.data.cifar10 import load_cifar10
from nolabel.data.demo import DEFAULT_DESIGN, DESIGNS, generate_demo
from nolabel.data.errors import DataError
from nolabel.data.layout import is_image_path, scan_folder, split_labels, strip_common_top
from nolabel.data.listfile import is_list_file, open_list
from nolabel.data.sources import FolderSource, PackedSource, Source, TarSource, TensorSource
from nolabel.data.subset import split_subset, take_subset

__all__ = ["ACCEPTED_FORMS", "open_source"]

ACCEPTED_FORMS = """accepted data specs:
  demo | demo:train | demo:test [?n=N&size=S&seed=K]   built-in shapes dataset
  PATH/TO/FOLDER            images in <class>/<file> (labelled) or any layout (unlabelled)
  flat:PATH                 force a folder or archive to be read as unlabelled
  PATH/TO/ARCHIVE.tar | .tar.gz | .tgz   a folder packed in a tar archive
  PATH/TO/LIST.txt | .csv   image paths, one a line (.txt) or a CSV with path[,label]
                            columns; relative paths are read from the list's folder
  cifar10:DIR | cifar10:DIR:test         CIFAR-10 python format (downloaded into DIR)
  SPEC?subset=N             a seeded, class-stratified subset of N items of any of the above"""

_SEEKABLE_SUFFIXES = (".tar",)
_STREAMED_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def _fail(spec: str, problem: str) -> DataError:
    return DataError(f"cannot open data spec {spec!r}: {problem}\n{ACCEPTED_FORMS}")


def _open_demo(spec: str) -> TensorSource:
    body, _, query = spec.partition("?")
    split = body.partition(":")[2] or "train"
    if split not in ("train", "test"):
        raise _fail(spec, f"unknown demo split {split!r} (use demo:train or demo:test)")
    options: dict[str, int] = {}
    design = DEFAULT_DESIGN
    for pair in filter(None, query.split("&")):
        key, _, value = pair.partition("=")
        if key == "design" and value in DESIGNS:
            design = value
            continue
        if key not in ("n", "size", "seed") or not re.fullmatch(r"\d+", value):
            raise _fail(spec, f"bad demo option {pair!r} (use n=N, size=S, seed=K with integers, "
                              f"design={'|'.join(DESIGNS)})")
        options[key] = int(value)
    try:
        data = generate_demo(split, n=options.get("n"), size=options.get("size", 32),
                             seed=options.get("seed", 0), design=design)
    except ValueError as err:
        raise _fail(spec, str(err)) from None
    keys = [f"demo:{split}#{i}" for i in range(len(data["labels"]))]
    return TensorSource(spec, keys, data["labels"].tolist(), data["classes"],
                        data["images"], data["masks"])


def _open_cifar(spec: str) -> TensorSource:
    body = spec[len("cifar10:"):]
    split = "train"
    for suffix in (":test", ":train"):
        if body.endswith(suffix):
            body, split = body[: -len(suffix)], suffix[1:]
    if not body:
        raise _fail(spec, "cifar10 needs a directory, e.g. cifar10:~/data/cifar10")
    loaded = load_cifar10(Path(body).expanduser(), split, spec)
    return TensorSource(spec, loaded.keys, loaded.labels.tolist(), loaded.classes,
                        loaded.images)


def _open_folder(spec: str, root: Path, force_flat: bool) -> FolderSource:
    found = scan_folder(root)
    if not found:
        raise _fail(spec, f"no image files found in directory {root}")
    keys, labels, classes = split_labels(found, force_flat)
    return FolderSource(spec, root, keys, labels, classes)


def _member_path(name: str) -> str | None:
    """Normalise a tar member name ('./a/b.jpg' -> 'a/b.jpg'); None for '..' or empty names."""
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def _open_tar(spec: str, path: Path, force_flat: bool) -> Source:
    seekable = path.name.lower().endswith(_SEEKABLE_SUFFIXES)
    names, spans, blobs = [], [], []
    try:
        with tarfile.open(path, "r:" if seekable else "r|*") as tar:
            for member in tar:
                name = _member_path(member.name)
                if not member.isfile() or name is None or not is_image_path(name):
                    continue
                names.append(name)
                if seekable:
                    spans.append((member.offset_data, member.size))
                else:
                    handle = tar.extractfile(member)
                    blobs.append(handle.read() if handle is not None else b"")
    except (tarfile.TarError, OSError, EOFError) as err:
        raise _fail(spec, f"cannot read archive {path} ({err})") from None
    if not names:
        raise _fail(spec, f"no image files found in archive {path}")
    stripped, _ = strip_common_top(names)
    order = sorted(range(len(stripped)), key=lambda i: stripped[i])
    keys, labels, classes = split_labels([stripped[i] for i in order], force_flat)
    if seekable:
        return TarSource(spec, path, keys, labels, classes, [spans[i] for i in order])
    return PackedSource(spec, path, keys, labels, classes, [blobs[i] for i in order])


def open_source(spec: str) -> Source:
    """Open a data spec and list its items (nothing is decoded yet).

    Raises:
        DataError: missing path, no images, unknown scheme, ... The message names
            the spec and lists the accepted forms.
    """
    text = spec.strip()
    if not text:
        raise _fail(spec, "empty spec")
    base, subset = split_subset(text)
    if subset is not None:
        return take_subset(spec, open_source(base), subset)
    if text == "demo" or text.startswith(("demo:", "demo?")):
        return _open_demo(text)
    if text.startswith("cifar10:"):
        return _open_cifar(text)
    force_flat = text.startswith("flat:")
    path_text = text[len("flat:"):] if force_flat else text
    if not path_text:
        raise _fail(spec, "flat: needs a folder or archive path, e.g. flat:~/photos")
    path = Path(path_text).expanduser()
    if not path.exists():
        scheme = re.match(r"^([A-Za-z][A-Za-z0-9_+.-]+):", path_text)
        if scheme and not force_flat:
            raise _fail(spec, f"unknown scheme {scheme.group(1)!r}:")
        raise _fail(spec, f"path {path} does not exist")
    if path.is_dir():
        return _open_folder(spec, path, force_flat)
    if path.name.lower().endswith(_SEEKABLE_SUFFIXES + _STREAMED_SUFFIXES):
        return _open_tar(spec, path, force_flat)
    if is_list_file(path):
        return open_list(spec, path, force_flat, lambda problem: _fail(spec, problem))
    raise _fail(spec, f"{path} is a file but not a .tar/.tar.gz/.tgz archive nor a .txt/.csv list")
