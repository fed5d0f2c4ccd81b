"""The image-folder layout rule shared by directories and tar archives.

A list of relative image paths is **labelled** when every path is exactly
``<class>/<file>``; the classes are then the sorted directory names. Otherwise
it is **flat**: every image is an unlabelled item (label -1). Paths are always
sorted so that item order is deterministic.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["IMAGE_EXTENSIONS", "is_image_path", "split_labels", "strip_common_top",
           "scan_folder"]

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)


def is_image_path(relative: str) -> bool:
    """True for a relative posix path ('a/b.jpg') with an image extension and no
    hidden component ('.name') nor empty component."""
    parts = relative.split("/")
    if any(not part or part.startswith(".") for part in parts):
        return False
    return os.path.splitext(parts[-1])[1].lower() in IMAGE_EXTENSIONS


def strip_common_top(paths: list[str]) -> tuple[list[str], str | None]:
    """Remove a top-level directory shared by every path (archives like ``train/<class>/x.jpg``).

    Returns:
        the stripped paths and the removed directory name (None when nothing was stripped).
    """
    tops = {path.split("/", 1)[0] for path in paths}
    if len(tops) != 1 or any("/" not in path for path in paths):
        return paths, None
    return [path.split("/", 1)[1] for path in paths], tops.pop()


def split_labels(paths: list[str], force_flat: bool = False
                 ) -> tuple[list[str], list[int], list[str] | None]:
    """Apply the labelled/flat rule to relative image paths.

    Args:
        paths: relative posix paths of image files (any order).
        force_flat: treat as flat even when the layout is ``<class>/<file>``.

    Returns:
        ``(sorted paths, labels, classes)``; labels are -1 and classes None when flat.
    """
    ordered = sorted(paths)
    if force_flat or any(path.count("/") != 1 for path in ordered):
        return ordered, [-1] * len(ordered), None
    folders = [path.split("/", 1)[0] for path in ordered]
    classes = sorted(set(folders))
    class_index = {name: i for i, name in enumerate(classes)}
    labels = [class_index[folder] for folder in folders]
    return ordered, labels, classes


def scan_folder(root: Path) -> list[str]:
    """All image files under ``root`` as relative posix paths, skipping hidden files and dirs.

    Symlinked directories are followed once (cycles are cut).
    """
    found: list[str] = []
    seen_dirs: set[str] = set()
    for current, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(current)
        if real in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames[:] = sorted(name for name in dirnames if not name.startswith("."))
        relative_dir = Path(current).relative_to(root)
        for name in filenames:
            relative = (relative_dir / name).as_posix()
            if is_image_path(relative):
                found.append(relative)
    return found
