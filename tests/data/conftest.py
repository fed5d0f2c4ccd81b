"""Fixtures for the data-layer tests: small image folders built in tmp_path."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    """Encode a Pillow image to bytes in ``fmt`` ("JPEG", "PNG", ...)."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def random_rgb(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A smooth random RGB image (compresses like a photo)."""
    small = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    return Image.fromarray(small, "RGB").resize((width, height), Image.Resampling.BICUBIC)


def write_bad_files(folder: Path, rng: np.random.Generator) -> dict[str, str]:
    """Write one bad file of each kind into ``folder``; returns {file name: kind}."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zero.jpg").write_bytes(b"")
    whole = encode(random_rgb(rng, 40, 40), "JPEG", quality=90)
    (folder / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (folder / "text.jpg").write_bytes(b"this is not an image\n" * 20)
    return {"zero.jpg": "empty", "truncated.jpg": "truncated", "text.jpg": "not an image"}


@pytest.fixture
def labelled_folder(tmp_path: Path) -> Path:
    """root/<class>/<file>: 3 classes x 4 good images (JPEG and PNG, 40x48 and 48x40),
    plus 3 bad files in 'cat', a hidden file and a non-image file."""
    rng = np.random.default_rng(0)
    root = tmp_path / "labelled"
    for class_name in ("cat", "dog", "emu"):
        folder = root / class_name
        folder.mkdir(parents=True)
        for i in range(4):
            image = random_rgb(rng, 40 + 8 * (i % 2), 48 - 8 * (i % 2))
            fmt, ext = ("PNG", "png") if i % 2 else ("JPEG", "jpg")
            (folder / f"{i:02d}.{ext}").write_bytes(encode(image, fmt))
    write_bad_files(root / "cat", rng)
    (root / "dog" / ".hidden.jpg").write_bytes(b"ignored")
    (root / "dog" / "notes.txt").write_text("ignored")
    return root


@pytest.fixture
def flat_folder(tmp_path: Path) -> Path:
    """Images at mixed depths (so unlabelled) plus 3 bad files and a hidden directory."""
    rng = np.random.default_rng(1)
    root = tmp_path / "flat"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".cache").mkdir()
    for i, relative in enumerate(["a.jpg", "sub/b.JPG", "sub/deeper/c.png", "d.webp", "e.bmp"]):
        fmt = {"jpg": "JPEG", "JPG": "JPEG", "png": "PNG", "webp": "WEBP", "bmp": "BMP"}[
            relative.rsplit(".", 1)[1]]
        (root / relative).write_bytes(encode(random_rgb(rng, 36 + i, 36), fmt))
    (root / ".cache" / "x.jpg").write_bytes(encode(random_rgb(rng, 36, 36), "JPEG"))
    write_bad_files(root / "sub", rng)
    return root
