"""MAE's loss (He et al. 2022, sec. 3): MSE on the masked patches only, against raw or
per-patch normalised pixels; patchify in the ViT's token order."""
from __future__ import annotations

import math

import pytest
import torch

from nolabel.losses.reconstruction import masked_mse, normalize_patches, patchify


def test_patchify_matches_a_loop_in_token_order():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 8, 12, generator=g)
    got = patchify(images, 4)                                          # grid 2 x 3
    assert got.shape == (2, 6, 48)
    for b in range(2):
        for r in range(2):
            for c in range(3):
                want = [float(images[b, ch, 4 * r + i, 4 * c + j]) for i in range(4) for j in range(4)
                        for ch in range(3)]
                assert got[b, r * 3 + c].tolist() == pytest.approx(want, abs=0)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        patchify(images, 5)


def naive_loss(pred, target, mask, norm_pix):
    """Per-patch loop: mean squared error of each masked patch, then the mean over them."""
    total, count = 0.0, 0
    for b in range(pred.shape[0]):
        for i in range(pred.shape[1]):
            if not mask[b, i]:
                continue
            t = [float(v) for v in target[b, i]]
            if norm_pix:
                mean = sum(t) / len(t)
                var = sum((v - mean) ** 2 for v in t) / len(t)
                t = [(v - mean) / math.sqrt(var + 1e-6) for v in t]
            total += sum((float(p) - v) ** 2 for p, v in zip(pred[b, i], t)) / len(t)
            count += 1
    return total / count


@pytest.mark.parametrize("norm_pix", [True, False])
def test_masked_mse_matches_a_per_patch_loop(norm_pix):
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(3, 10, 12, generator=g)
    target = torch.randn(3, 10, 12, generator=g) * 2 + 0.5
    mask = torch.rand(3, 10, generator=g) < 0.6
    got = masked_mse(pred, target, mask, norm_pix)
    assert float(got) == pytest.approx(naive_loss(pred, target, mask, norm_pix), rel=1e-5)


def test_visible_patch_targets_never_reach_the_loss():
    g = torch.Generator().manual_seed(2)
    pred = torch.randn(2, 8, 6, generator=g, requires_grad=True)
    target = torch.randn(2, 8, 6, generator=g)
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[0, [1, 4, 5]] = True
    mask[1, [0, 7]] = True
    for norm_pix in (True, False):
        base = masked_mse(pred, target, mask, norm_pix)
        visible_changed = target.clone()
        visible_changed[~mask] = torch.randn(int((~mask).sum()), 6, generator=g) * 10
        assert torch.equal(masked_mse(pred, visible_changed, mask, norm_pix), base)
        masked_changed = target.clone()
        masked_changed[1, 7, 2] += 3.0
        assert not torch.allclose(masked_mse(pred, masked_changed, mask, norm_pix), base)
    # and the predictions of visible patches get no gradient
    masked_mse(pred, target, mask).backward()
    assert (pred.grad[~mask] == 0).all() and (pred.grad[mask] != 0).any()


def test_normalized_patches_have_zero_mean_unit_std_and_are_shift_invariant():
    x = torch.randn(4, 5, 48) * 3 + 7
    y = normalize_patches(x)
    torch.testing.assert_close(y.mean(-1), torch.zeros(4, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(-1, unbiased=False), torch.ones(4, 5), atol=1e-4, rtol=0)
    torch.testing.assert_close(normalize_patches(x * 2 - 5), y, atol=1e-4, rtol=0)


def test_masked_mse_checks_shapes_and_runs_in_float32():
    pred = torch.randn(2, 4, 3, dtype=torch.bfloat16)
    loss = masked_mse(pred, torch.randn(2, 4, 3), torch.ones(2, 4, dtype=torch.bool))
    assert loss.dtype == torch.float32
    with pytest.raises(ValueError, match="must be"):
        masked_mse(torch.randn(2, 4, 3), torch.randn(2, 4, 3), torch.ones(2, 5, dtype=torch.bool))
