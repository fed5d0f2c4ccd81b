"""Outputs written whole or not at all.

Every output file of a command is first written into a hidden staging folder inside the
destination, and only moved into place (``os.replace``, same file system) once all of them
exist: an error while writing leaves no file of the run behind, and a refused run never
gets here.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

Writer = Callable[[Path], None]


def text_writer(text: str) -> Writer:
    return lambda path: path.write_text(text)


def json_writer(obj) -> Writer:
    return text_writer(json.dumps(obj, indent=2) + "\n")


def csv_writer(header: list[str], rows) -> Writer:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return text_writer(buffer.getvalue())


def png_writer(image) -> Writer:
    return lambda path: image.save(path, format="PNG")


def publish(folder: str | Path, files: dict[str, Writer], replace_dirs: tuple[str, ...] = ()) -> list[Path]:
    """Write ``files`` (relative path -> writer) into ``folder`` (created). Subfolders in
    ``replace_dirs`` are replaced whole, so no file of an earlier run stays among the new
    ones. Returns the final paths."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    stage = folder / f".nolabel-staging-{os.getpid()}"
    try:
        for name, write in files.items():
            target = stage / name
            target.parent.mkdir(parents=True, exist_ok=True)
            write(target)
        for name in replace_dirs:
            if (folder / name).is_dir():
                shutil.rmtree(folder / name)
        final = []
        for name in files:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / name, folder / name)
            final.append(folder / name)
        return final
    except BaseException:
        if created:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
