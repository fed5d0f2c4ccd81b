"""Image grids as PNG: rows of uint8 images, each with an optional caption below it."""
from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

CAPTION_HEIGHT = 14


def tile_grid(rows: list[list[tuple[Tensor, str]]], tile: int, gap: int = 2, split_after: int | None = None):
    """A white canvas with one row per entry of ``rows``; a cell is (uint8 (3, S, S),
    caption). Images are scaled to ``tile`` pixels (nearest neighbour when enlarging, so
    small images stay sharp). Captions, when any cell has one, go in a strip under each
    image. ``split_after``: leave an extra gap after that many columns (a query column)."""
    captions = any(text for row in rows for _, text in row)
    cell_h = tile + (CAPTION_HEIGHT if captions else 0) + gap
    extra = 3 * gap if split_after else 0
    cols = max((len(row) for row in rows), default=1)
    canvas = Image.new("RGB", (cols * (tile + gap) + extra, max(1, len(rows)) * cell_h), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for r, row in enumerate(rows):
        for c, (image, text) in enumerate(row):
            picture = Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())
            if picture.size != (tile, tile):
                enlarge = tile > picture.size[0]
                picture = picture.resize((tile, tile), Image.Resampling.NEAREST if enlarge else
                                         Image.Resampling.BICUBIC)
            x = c * (tile + gap) + (extra if split_after and c >= split_after else 0)
            canvas.paste(picture, (x, r * cell_h))
            if text:
                draw.text((x + 1, r * cell_h + tile + 1), text, fill="black", font=font)
    return canvas
