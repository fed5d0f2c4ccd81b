"""Cutting an image into a grid of tiles with gaps and jitter: the patch sampling of the
spatial-context pretext tasks, shared by ``methods/jigsaw.py`` and ``methods/relativeloc.py``.

- Jigsaw (Noroozi and Favaro, ECCV 2016, Section 3.3): a 225 px crop split into a 3x3
  grid of 75 px cells; each tile is a random 64 px crop of its cell, so neighbouring
  tiles are separated by a random gap (avg. 11 px) and edges cannot simply be continued.
- Relative position (Doersch, Gupta and Efros, ICCV 2015, Section 3): 96 px patches on a
  3x3 grid with gaps of half a patch (48 px), each patch jittered by up to 7 px.

Both are a :class:`TileGrid` (cell side, tile side, how far a tile may move from the centre of
its cell) plus :func:`sample_tile_origins` and :func:`cut_tiles`. Cells are numbered in raster
order (row-major), cell 4 is the centre of a 3x3 grid. Random numbers come from torch's
default CPU generator (as ``views.py``), so ``torch.manual_seed`` reproduces tiles.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# The 8 neighbours of the centre cell as (row, column) offsets, in raster order: the labels
# 0..7 of the relative-position task (Doersch et al., Fig. 2).
NEIGHBOUR_OFFSETS: tuple[tuple[int, int], ...] = (
    (-1, -1), (-1, 0), (-1, 1),
    (0, -1), (0, 1),
    (1, -1), (1, 0), (1, 1),
)


@dataclass(frozen=True)
class TileGrid:
    """A ``grid`` x ``grid`` layout of ``cell`` px cells, starting ``margin`` px from the top-left
    corner of the image, each holding one ``tile`` px tile. A tile sits at the centre of its
    cell moved by up to ``jitter`` px per axis (clipped to the cell): ``cell - tile`` is the
    room for gap and jitter."""
    grid: int
    cell: int
    tile: int
    jitter: int
    margin: int = 0

    def __post_init__(self) -> None:
        if self.grid < 1 or self.tile < 1 or self.tile > self.cell or self.jitter < 0 or self.margin < 0:
            raise ValueError(f"invalid tile grid {self}")

    @property
    def n_tiles(self) -> int:
        return self.grid * self.grid

    @property
    def centre(self) -> int:
        """Index of the centre cell (odd grids)."""
        return self.n_tiles // 2

    def cell_index(self, row: int, col: int) -> int:
        return row * self.grid + col

    def neighbour_index(self, label: int) -> int:
        """Cell index of relative-position label ``label`` (0..7) around the centre."""
        dr, dc = NEIGHBOUR_OFFSETS[label]
        c = self.grid // 2
        return self.cell_index(c + dr, c + dc)


def tile_grid(image_size: int, tile_fraction: float, jitter_fraction: float | None = None,
              grid: int = 3) -> TileGrid:
    """The layout for an ``image_size`` px image: cells of ``image_size // grid`` px (the grid
    centred), tiles of ``round(tile_fraction * cell)`` px (at least 1), jitter of
    ``round(jitter_fraction * tile)`` px; ``jitter_fraction=None`` lets a tile sit anywhere in
    its cell (the jigsaw's uniform placement)."""
    if not 0.0 < tile_fraction <= 1.0:
        raise ValueError(f"tile_fraction must be in (0, 1], got {tile_fraction}")
    cell = image_size // grid
    if cell < 1:
        raise ValueError(f"image of {image_size} px is too small for a {grid}x{grid} grid")
    tile = max(1, round(tile_fraction * cell))
    jitter = cell if jitter_fraction is None else round(jitter_fraction * tile)
    return TileGrid(grid=grid, cell=cell, tile=tile, jitter=jitter, margin=(image_size - grid * cell) // 2)


def cell_origins(layout: TileGrid) -> Tensor:
    """Top-left (y, x) of every cell in raster order: int64 (n_tiles, 2)."""
    r = torch.arange(layout.grid)
    rows, cols = torch.meshgrid(r, r, indexing="ij")
    return layout.margin + layout.cell * torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1)


def sample_tile_origins(n: int, layout: TileGrid) -> Tensor:
    """Random top-left (y, x) of each tile of ``n`` images: int64 (n, n_tiles, 2) on the CPU.

    Each coordinate is the cell origin plus an offset uniform over the integers of
    ``[room // 2 - jitter, room // 2 + jitter]`` clipped to ``[0, room]``, ``room = cell - tile``."""
    room = layout.cell - layout.tile
    lo = max(0, room // 2 - layout.jitter)
    hi = min(room, room // 2 + layout.jitter)
    offsets = torch.randint(lo, hi + 1, (n, layout.n_tiles, 2))
    return cell_origins(layout).unsqueeze(0) + offsets


def cut_tiles(images: Tensor, origins: Tensor, tile: int) -> Tensor:
    """images (B, C, H, W), origins int (B, T, 2) top-left (y, x) -> tiles (B, T, C, tile, tile)."""
    b = images.shape[0]
    origins = origins.to(images.device)
    ar = torch.arange(tile, device=images.device)
    rows = origins[..., 0, None] + ar                                   # (B, T, tile)
    cols = origins[..., 1, None] + ar                                   # (B, T, tile)
    batch = torch.arange(b, device=images.device).view(b, 1, 1, 1)
    out = images[batch, :, rows[..., :, None], cols[..., None, :]]      # (B, T, tile, tile, C)
    return out.permute(0, 1, 4, 2, 3)


def normalize_tiles(tiles: Tensor, eps: float = 1e-5) -> Tensor:
    """Each tile and channel to zero mean and unit std (Noroozi and Favaro, Section 3.3: keeps
    the network from matching tiles by low-level statistics). (..., C, h, w) -> same shape."""
    mean = tiles.mean(dim=(-2, -1), keepdim=True)
    std = tiles.std(dim=(-2, -1), keepdim=True)
    return (tiles - mean) / (std + eps)


def fit_side(tile: int, multiple: int | None) -> int:
    """The side a ``tile`` px tile is resized to so that it is a multiple of ``multiple`` (a
    ViT's patch size): the nearest multiple, at least one; ``tile`` itself when None."""
    if not multiple:
        return tile
    return max(multiple, multiple * round(tile / multiple))


def resize_tiles(tiles: Tensor, side: int) -> Tensor:
    """(N, C, h, w) -> (N, C, side, side), bilinear; unchanged when already ``side`` px."""
    if tiles.shape[-2:] == (side, side):
        return tiles
    return F.interpolate(tiles, size=(side, side), mode="bilinear", align_corners=False, antialias=True)


def encode_tiles(backbone, tiles: Tensor) -> Tensor:
    """Every tile through ``backbone`` in one batch: tiles (B, T, C, t, t) -> features (B, T, D).

    Tiles are resized to a multiple of ``backbone.patch_size`` when the backbone has one
    (a ViT interpolates its position embeddings to any such size); ResNets take them as cut."""
    b, t = tiles.shape[:2]
    flat = tiles.reshape(b * t, *tiles.shape[2:])                       # (B*T, C, t, t)
    flat = resize_tiles(flat, fit_side(flat.shape[-1], getattr(backbone, "patch_size", None)))
    return backbone(flat).reshape(b, t, -1)                             # (B, T, D)
