"""A list file as a data spec: ``paths.txt`` (one image path a line) or ``paths.csv``
(a ``path`` column and an optional ``label`` column; header names in any case).

Relative paths resolve against the list file's folder. Rows keep the file's order.
Listed files that are missing or unreadable stay in the source and are skipped
and reported as bad items when read, like broken files in a folder; a list
where no listed file exists is an error naming the list file.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

from nolabel.data.errors import DataError
from nolabel.data.sources import Source

Fail = Callable[[str], DataError]  # problem -> an error naming the spec

__all__ = ["LIST_SUFFIXES", "ListSource", "is_list_file", "open_list"]

LIST_SUFFIXES = (".txt", ".csv")


def is_list_file(path: Path) -> bool:
    """True for an existing file named ``*.txt`` or ``*.csv``."""
    return path.is_file() and path.suffix.lower() in LIST_SUFFIXES


class ListSource(Source):
    """Images named by a list file; ``keys`` are the paths as written in the list."""

    def __init__(self, name: str, paths: list[Path], keys: list[str], labels: list[int],
                 classes: list[str] | None) -> None:
        super().__init__(name, keys, labels, classes)
        self.paths = paths

    def read(self, index: int) -> bytes:
        with open(self.paths[index], "rb") as handle:
            return handle.read()

    def location(self, index: int) -> str:
        return str(self.paths[index])


def _read_txt(path: Path) -> list[tuple[str, str]]:
    rows = []
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        entry = line.strip()
        if entry and not entry.startswith("#"):
            rows.append((entry, ""))
    return rows


def _read_csv(path: Path, fail: Fail) -> list[tuple[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [name.strip().lower() for name in reader.fieldnames or []]
        if "path" not in columns:
            raise fail(f"the CSV has no 'path' column (columns: {', '.join(columns) or 'none'})")
        reader.fieldnames = columns
        rows = []
        for row in reader:
            entry = (row.get("path") or "").strip()
            if entry:
                rows.append((entry, (row.get("label") or "").strip()))
    return rows


def _class_order(names: set[str]) -> list[str]:
    """Sorted class names; numerically when every name is an integer ("2" before "10")."""
    if all(name.lstrip("-").isdigit() for name in names):
        return sorted(names, key=int)
    return sorted(names)


def open_list(spec: str, path: Path, force_flat: bool, fail: Fail) -> ListSource:
    """Open the list file ``path`` (``.txt`` or ``.csv``) given as data spec ``spec``.

    Args:
        force_flat: ignore the ``label`` column.
        fail: ``fail(problem) -> DataError`` that names the spec.

    Raises:
        DataError: unreadable list, no ``path`` column, no rows, labels on only
            some rows, or none of the listed files exists.
    """
    try:
        rows = _read_csv(path, fail) if path.suffix.lower() == ".csv" else _read_txt(path)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise fail(f"cannot read list file {path} ({err})") from None
    if not rows:
        raise fail(f"list file {path} lists no image paths")
    paths = [(path.parent / Path(entry).expanduser()) for entry, _ in rows]
    if not any(item.is_file() for item in paths):
        raise fail(f"none of the {len(rows)} files listed in {path} exists (e.g. {paths[0]}); "
                   f"relative paths are read from {path.parent}")
    texts = [label for _, label in rows]
    labelled = [i for i, label in enumerate(texts) if label]
    if force_flat or not labelled:
        return ListSource(spec, paths, [entry for entry, _ in rows], [-1] * len(rows), None)
    if len(labelled) != len(rows):
        missing = next(i for i, label in enumerate(texts) if not label)
        raise fail(f"list file {path}: row {missing + 1} ({rows[missing][0]}) has no label while "
                   f"others do; give every row a label or none")
    classes = _class_order(set(texts))
    index = {name: i for i, name in enumerate(classes)}
    return ListSource(spec, paths, [entry for entry, _ in rows], [index[t] for t in texts], classes)
