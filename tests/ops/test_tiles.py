"""Tile grids with gaps and jitter (Noroozi and Favaro 2016; Doersch et al. 2015)."""
from __future__ import annotations

import pytest
import torch

from nolabel.ops.tiles import (NEIGHBOUR_OFFSETS, TileGrid, cell_origins, cut_tiles, encode_tiles, fit_side,
                               normalize_tiles, resize_tiles, sample_tile_origins, tile_grid)


def test_layout_sizes():
    g = tile_grid(225, 64 / 75)                                  # the jigsaw paper's numbers
    assert (g.grid, g.cell, g.tile, g.margin) == (3, 75, 64, 0) and g.jitter >= 75
    g = tile_grid(32, 64 / 75)
    assert (g.cell, g.tile, g.margin) == (10, 9, 1)
    g = tile_grid(144 * 3, 2 / 3, 7 / 96)                        # Doersch: 96 px patches, 48 px gaps, 7 px jitter
    assert (g.cell, g.tile, g.jitter) == (144, 96, 7)
    with pytest.raises(ValueError):
        tile_grid(2, 0.5)
    with pytest.raises(ValueError):
        TileGrid(grid=3, cell=4, tile=5, jitter=0)


def test_cell_origins_raster_order():
    g = TileGrid(grid=3, cell=10, tile=8, jitter=0, margin=1)
    assert cell_origins(g).tolist() == [[1 + 10 * r, 1 + 10 * c] for r in range(3) for c in range(3)]
    assert g.centre == 4 and g.n_tiles == 9


def test_neighbour_offsets():
    assert len(NEIGHBOUR_OFFSETS) == 8 and len(set(NEIGHBOUR_OFFSETS)) == 8
    assert (0, 0) not in NEIGHBOUR_OFFSETS
    assert all(max(abs(dr), abs(dc)) == 1 for dr, dc in NEIGHBOUR_OFFSETS)
    assert list(NEIGHBOUR_OFFSETS) == sorted(NEIGHBOUR_OFFSETS)            # raster order
    g = TileGrid(grid=3, cell=10, tile=8, jitter=0)
    assert [g.neighbour_index(k) for k in range(8)] == [0, 1, 2, 3, 5, 6, 7, 8]


def test_sampled_origins_stay_in_their_cells():
    torch.manual_seed(0)
    for g in (TileGrid(3, 10, 6, jitter=100), TileGrid(3, 12, 6, jitter=1, margin=2), TileGrid(3, 8, 8, 0)):
        o = sample_tile_origins(500, g)
        assert o.shape == (500, 9, 2) and o.dtype == torch.int64
        off = o - cell_origins(g)
        room = g.cell - g.tile
        assert int(off.min()) >= max(0, room // 2 - g.jitter) and int(off.max()) <= min(room, room // 2 + g.jitter)
    o = sample_tile_origins(2000, TileGrid(3, 10, 6, jitter=100)) - cell_origins(TileGrid(3, 10, 6, 100))
    assert set(o.unique().tolist()) == {0, 1, 2, 3, 4}                     # uniform over the whole room
    o = sample_tile_origins(2000, TileGrid(3, 12, 6, jitter=1)) - cell_origins(TileGrid(3, 12, 6, 1))
    assert set(o.unique().tolist()) == {2, 3, 4}                           # centre 3, +-1


def test_cut_tiles_matches_slicing():
    torch.manual_seed(0)
    images = torch.randn(4, 3, 32, 32)
    g = tile_grid(32, 0.8, None)
    origins = sample_tile_origins(4, g)
    tiles = cut_tiles(images, origins, g.tile)
    assert tiles.shape == (4, 9, 3, g.tile, g.tile)
    for b in range(4):
        for t in range(9):
            y, x = origins[b, t].tolist()
            assert torch.equal(tiles[b, t], images[b, :, y:y + g.tile, x:x + g.tile])


def test_normalize_and_resize():
    tiles = torch.rand(2, 9, 3, 7, 7) * 5 + 3
    n = normalize_tiles(tiles)
    assert torch.allclose(n.mean(dim=(-2, -1)), torch.zeros(2, 9, 3), atol=1e-5)
    assert torch.allclose(n.std(dim=(-2, -1)), torch.ones(2, 9, 3), atol=1e-3)
    assert fit_side(9, 8) == 8 and fit_side(7, 8) == 8 and fit_side(3, 8) == 8 and fit_side(13, 4) == 12
    assert fit_side(9, None) == 9
    assert resize_tiles(torch.rand(5, 3, 9, 9), 8).shape == (5, 3, 8, 8)


def test_encode_tiles_resizes_to_the_patch_size():
    class Probe(torch.nn.Module):
        patch_size = 4
        num_features = 2

        def forward(self, x):
            assert x.shape[-1] % self.patch_size == 0
            return torch.stack([x.mean(dim=(1, 2, 3)), torch.full((len(x),), float(x.shape[-1]))], dim=1)

    feats = encode_tiles(Probe(), torch.rand(3, 9, 3, 9, 9))
    assert feats.shape == (3, 9, 2) and bool((feats[..., 1] == 8).all())
