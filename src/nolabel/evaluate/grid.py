"""Image grids as PNG: rows of uint8 images, each with an optional caption below it and an
optional title above the row; the cluster grid of ``nolabel cluster`` and ``eval clustering``."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

CAPTION_HEIGHT = 14


def tile_grid(rows: list[list[tuple[Tensor, str]]], tile: int, gap: int = 2, split_after: int | None = None,
              row_titles: Sequence[str] | None = None):
    """A white canvas with one row per entry of ``rows``; a cell is (uint8 (3, S, S),
    caption). Images are scaled to ``tile`` pixels (nearest neighbour when enlarging, so
    small images stay sharp). Captions, when any cell has one, go in a strip under each
    image. ``split_after``: leave an extra gap after that many columns (a query column).
    ``row_titles``: one line of text per row, in a strip above it (the canvas widens to fit)."""
    captions = any(text for row in rows for _, text in row)
    top = CAPTION_HEIGHT if row_titles else 0
    cell_h = top + tile + (CAPTION_HEIGHT if captions else 0) + gap
    extra = 3 * gap if split_after else 0
    cols = max((len(row) for row in rows), default=1)
    font = ImageFont.load_default()
    width = max([cols * (tile + gap) + extra] + [int(font.getlength(t)) + 2 for t in row_titles or []])
    canvas = Image.new("RGB", (width, max(1, len(rows)) * cell_h), "white")
    draw = ImageDraw.Draw(canvas)
    for r, title in enumerate(row_titles or []):
        draw.text((1, r * cell_h + 1), title, fill="black", font=font)
    for r, row in enumerate(rows):
        for c, (image, text) in enumerate(row):
            picture = Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())
            if picture.size != (tile, tile):
                enlarge = tile > picture.size[0]
                picture = picture.resize((tile, tile), Image.Resampling.NEAREST if enlarge else
                                         Image.Resampling.BICUBIC)
            x = c * (tile + gap) + (extra if split_after and c >= split_after else 0)
            canvas.paste(picture, (x, r * cell_h + top))
            if text:
                draw.text((x + 1, r * cell_h + top + tile + 1), text, fill="black", font=font)
    return canvas


def cluster_titles(clusters: Sequence[int], assignments: np.ndarray, labels: np.ndarray | None,
                   classes: Sequence[str] | None) -> list[str]:
    """Titles "cluster C: N images" per cluster id, plus ", P% NAME" (its majority class and that
    class's share) when ``labels`` (one per assignment, >= 0) are given."""
    titles = []
    for c in clusters:
        member = assignments == c
        title = f"cluster {c}: {int(member.sum())} images"
        if labels is not None and member.any():
            counts = np.bincount(labels[member])
            top = int(counts.argmax())
            name = classes[top] if classes and top < len(classes) else f"class {top}"
            title += f", {counts[top] / member.sum():.0%} {name}"
        titles.append(title)
    return titles


def cluster_grid(images: Tensor, picks: Sequence[np.ndarray], titles: Sequence[str], tile: int | None = None):
    """One titled row per cluster: ``images`` uint8 (M, 3, S, S) are the images of
    ``picks`` (one array of members per row) concatenated in that order. ``tile``: pixels
    per image (default S, at least 64 so that small images stay visible)."""
    tile = tile or max(64, images.shape[-1])
    rows, start = [], 0
    for p in picks:
        rows.append([(images[start + j], "") for j in range(len(p))])
        start += len(p)
    return tile_grid(rows, tile, row_titles=titles)
