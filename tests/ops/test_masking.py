"""Patch masking for masked image modelling: MAE's uniform random subsets, BEiT's blocks with
iBOT's per-image ratios, and the scatter that puts visible tokens back in place."""
from __future__ import annotations

import math

import pytest
import torch

from nolabel.ops.masking import block_masking, random_masking, sample_mask_ratios, scatter_visible


@pytest.mark.parametrize("n_patches,ratio,hidden", [(64, 0.75, 48), (16, 0.75, 12), (196, 0.75, 147), (10, 0.5, 5),
                                                    (4, 0.6, 2)])
def test_random_masking_hides_exactly_the_ratio_in_every_image(n_patches, ratio, hidden):
    torch.manual_seed(0)
    keep, mask = random_masking(32, n_patches, ratio)
    assert mask.dtype == torch.bool and mask.shape == (32, n_patches)
    assert keep.dtype == torch.int64 and keep.shape == (32, n_patches - hidden)
    assert (mask.sum(dim=1) == hidden).all()
    for b in range(32):
        visible = keep[b].tolist()
        assert visible == sorted(set(visible))                       # distinct, ascending
        assert set(visible) == set((~mask[b]).nonzero().flatten().tolist())   # keep and mask agree
    # a different random set per image
    assert len({tuple(k.tolist()) for k in keep}) >= min(16, math.comb(n_patches, hidden))


def test_random_masking_is_uniform_and_seeded():
    torch.manual_seed(0)
    _, mask = random_masking(4000, 16, 0.75)
    frequency = mask.float().mean(dim=0)                             # each patch hidden 75% of the time
    assert ((frequency - 0.75).abs() < 0.04).all()
    torch.manual_seed(3)
    a = random_masking(8, 16, 0.75)
    torch.manual_seed(3)
    b = random_masking(8, 16, 0.75)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("ratio", [0.0, 1.0, 0.01, 0.99, 0.9])
def test_random_masking_needs_a_hidden_and_a_visible_patch(ratio):
    with pytest.raises(ValueError, match="at least one"):
        random_masking(2, 16 if ratio != 0.9 else 4, ratio)   # 0.9 of 4 rounds to all 4


def test_mask_ratios_per_image():
    torch.manual_seed(0)
    ratios = sample_mask_ratios(20000, 0.5, 0.1, 0.5)
    masked = ratios > 0
    assert abs(float(masked.float().mean()) - 0.5) < 0.02
    assert float(ratios[masked].min()) >= 0.1 and float(ratios[masked].max()) <= 0.5
    assert abs(float(ratios[masked].mean()) - 0.3) < 0.01
    assert (sample_mask_ratios(50, 0.0, 0.1, 0.5) == 0).all()
    with pytest.raises(ValueError):
        sample_mask_ratios(4, 0.5, 0.6, 0.5)


def test_block_masking_reaches_each_images_target():
    torch.manual_seed(0)
    ratios = torch.rand(300, dtype=torch.float64) * 0.5
    ratios[:50] = 0.0
    mask = block_masking(ratios, (8, 8))
    assert mask.shape == (300, 64) and mask.dtype == torch.bool
    counts = mask.sum(dim=1)
    target = torch.round(ratios * 64).long()
    assert (counts >= target).all()
    assert (counts[:50] == 0).all()
    # overshoot: rounding of the last block's sides and overlaps only
    assert float((counts - target).float().mean()) < 3.0
    assert len({tuple(m.tolist()) for m in mask[50:]}) > 200           # different per image


def test_one_round_of_block_masking_is_one_filled_rectangle():
    torch.manual_seed(1)
    ratios = torch.full((200,), 0.4, dtype=torch.float64)
    mask = block_masking(ratios, (6, 10), max_rounds=1).reshape(200, 6, 10)
    shapes = set()
    for m in mask:
        rows, cols = m.nonzero(as_tuple=True)
        box = m[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.all() and int(m.sum()) == box.numel()
        shapes.add(tuple(box.shape))
    assert len(shapes) > 3                                           # aspect ratios vary
    assert any(h > w for h, w in shapes) and any(w > h for h, w in shapes)


def test_scatter_visible_places_tokens_and_fills_the_rest():
    visible = torch.randn(3, 2, 4, requires_grad=True)
    keep = torch.tensor([[0, 3], [4, 1], [2, 5]])
    fill = torch.randn(4, requires_grad=True)
    full = scatter_visible(visible, keep, 6, fill)
    assert full.shape == (3, 6, 4)
    for b in range(3):
        for i in range(6):
            where = (keep[b] == i).nonzero()
            want = visible[b, int(where[0])] if len(where) else fill
            assert torch.equal(full[b, i], want)
    full.sum().backward()
    assert torch.equal(visible.grad, torch.ones(3, 2, 4))
    assert torch.equal(fill.grad, torch.full((4,), 12.0))           # 3 images x 4 hidden positions
