"""Multi-crop views (thesis 4.2.4, 5.3.2, 5.6.7)."""
from __future__ import annotations

import kornia
import pytest
import torch
import torch.nn.functional as F

from nolabel import views as V
from nolabel.view_presets import dino_views, plain_views, siamese_views, swav_views, tile_views, two_view_preset
from nolabel.views import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MultiCrop,
    ViewSpec,
    blur_kernel_size,
    local_size,
    n_global,
    normalize,
)

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
OFF = dict(flip=0.0, jitter=0.0, grayscale=0.0, blur=0.0, solarize=0.0)  # all augmentations off


def images(b=4, s=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, s, s), dtype=torch.uint8, generator=g)


def unnormalize(v):
    return v * STD + MEAN


def test_outputs_count_order_shapes_and_range():
    specs = dino_views(32, n_local=3, blur=True)
    mc = MultiCrop(specs)
    assert (mc.n_views, mc.n_global_views) == (5, 2)
    torch.manual_seed(0)
    out = mc(images(b=6))
    assert [tuple(v.shape) for v in out] == [(6, 3, 32, 32)] * 2 + [(6, 3, 16, 16)] * 3
    lo, hi = (0 - MEAN) / STD, (1 - MEAN) / STD
    for v in out:
        assert v.dtype == torch.float32 and torch.isfinite(v).all()
        assert (v >= lo - 1e-5).all() and (v <= hi + 1e-5).all()


def test_seed_reproducible_and_rng_state_resume():
    mc, x = MultiCrop(dino_views(32, n_local=2)), images()
    torch.manual_seed(3)
    a = mc(x)
    torch.manual_seed(3)
    b = mc(x)
    torch.manual_seed(4)
    c = mc(x)
    assert all(torch.equal(u, w) for u, w in zip(a, b))
    assert all(not torch.equal(u, w) for u, w in zip(a, c))
    state = torch.get_rng_state()
    d = mc(x)
    torch.set_rng_state(state)
    assert all(torch.equal(u, w) for u, w in zip(d, mc(x)))


def test_each_sample_gets_its_own_parameters():
    x = images(b=1).expand(8, -1, -1, -1).contiguous()
    torch.manual_seed(0)
    (v,) = MultiCrop([ViewSpec(32, (0.2, 1.0))])(x)
    assert len({tuple(r.flatten()[:64].tolist()) for r in v}) == 8


def test_identity_when_everything_is_off():
    x = images(b=3)
    (v,) = MultiCrop([ViewSpec(32, (1.0, 1.0), ratio=(1.0, 1.0), **OFF)])(x)
    torch.testing.assert_close(v, normalize(x), atol=1e-4, rtol=0)


@pytest.mark.parametrize("size", [32, 20, 48])
def test_flip_only_is_the_mirrored_resized_image(size):
    x = images(b=3)
    spec = ViewSpec(size, (1.0, 1.0), ratio=(1.0, 1.0), **{**OFF, "flip": 1.0})
    (v,) = MultiCrop([spec])(x)
    resized = F.interpolate(x.float() / 255, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    torch.testing.assert_close(v, normalize(resized.flip(-1)), atol=1e-4, rtol=0)


def test_solarize_inverts_pixels_above_threshold():
    x = images(b=2)
    x[0, :, 0, :4] = torch.tensor([127, 128, 0, 255], dtype=torch.uint8)
    (v,) = MultiCrop([ViewSpec(32, (1.0, 1.0), ratio=(1.0, 1.0), **{**OFF, "solarize": 1.0})])(x)
    f = x.float() / 255
    torch.testing.assert_close(v, normalize(torch.where(f >= 0.5, 1 - f, f)), atol=1e-4, rtol=0)


def test_grayscale_makes_channels_equal():
    (v,) = MultiCrop([ViewSpec(24, (0.3, 1.0), **{**OFF, "grayscale": 1.0})])(images())
    u = unnormalize(v)
    torch.testing.assert_close(u[:, 0], u[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(u[:, 1], u[:, 2], atol=1e-5, rtol=0)


def test_jitter_and_blur_keep_unit_range_and_change_pixels():
    x = images()
    spec = ViewSpec(32, (1.0, 1.0), ratio=(1.0, 1.0), **{**OFF, "jitter": 1.0, "blur": 1.0})
    torch.manual_seed(0)
    (v,) = MultiCrop([spec])(x)
    u = unnormalize(v)
    assert (u > -1e-5).all() and (u < 1 + 1e-5).all()
    assert (u - x.float() / 255).abs().mean() > 0.01


def test_hue_matches_torchvision_formula():
    x = torch.rand(4, 3, 9, 9)
    f = torch.tensor([-0.5, -0.1, 0.05, 0.3])
    torch.testing.assert_close(V._hue(x, f), kornia.enhance.adjust_hue(x, f * 2 * torch.pi), atol=1e-5, rtol=0)


def test_blur_matches_reference_gaussian():
    x, sigma = torch.rand(3, 3, 16, 16), torch.tensor([0.3, 1.0, 2.0])
    ref = kornia.filters.gaussian_blur2d(x, (5, 5), torch.stack([sigma, sigma], 1), border_type="reflect")
    torch.testing.assert_close(V._gaussian_blur(x, sigma, 5), ref, atol=1e-5, rtol=0)


def test_crop_boxes_follow_scale_and_ratio():
    torch.manual_seed(0)
    b = V._sample_crop_boxes(500, 64, 64, (0.1, 0.5), (0.75, 4 / 3))
    top, left, h, w = b.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 64).all() and (left + w <= 64).all()
    area = h * w / 64**2
    assert area.min() > 0.08 and area.max() < 0.53
    assert (w / h).min() > 0.7 and (w / h).max() < 1.45


def test_local_size_and_kernel_size():
    assert [local_size(s) for s in (32, 64, 96, 128, 224, 8)] == [16, 24, 40, 56, 96, 8]
    assert blur_kernel_size(224) == 23
    assert all(blur_kernel_size(s) % 2 == 1 for s in range(2, 300))


def test_dino_views_structure():
    specs = dino_views(128, n_local=6)
    assert [s.is_global for s in specs] == [True, True, False]
    g1, g2, loc = specs
    assert (g1.size, g1.scale, g1.blur, g1.solarize) == (128, (0.32, 1.0), 1.0, 0.0)
    assert (g2.size, g2.scale, g2.blur, g2.solarize) == (128, (0.32, 1.0), 0.1, 0.2)
    assert (loc.size, loc.scale, loc.count, loc.blur) == (56, (0.05, 0.32), 6, 0.5)
    assert all(s.blur == 0 for s in dino_views(32))  # auto: no blur below 64 px
    assert dino_views(32, blur=True)[0].blur == 1.0


def test_no_local_views_and_batch_of_one():
    mc = MultiCrop(dino_views(32, n_local=0))
    assert (mc.n_views, mc.n_global_views) == (2, 2)
    out = MultiCrop(dino_views(32, n_local=2))(images(b=1))
    assert [tuple(v.shape) for v in out] == [(1, 3, 32, 32)] * 2 + [(1, 3, 16, 16)] * 2
    assert len(mc(images(b=1))) == 2


def test_two_view_preset():
    a, b = two_view_preset(96)
    assert (a.blur, a.solarize, b.blur, b.solarize, a.scale) == (1.0, 0.0, 0.1, 0.2, (0.08, 1.0))
    assert two_view_preset(32, solarize=False)[1].solarize == 0.0


def test_n_global_counts_the_global_views_of_every_preset():
    assert n_global([ViewSpec(32, (0.3, 1.0), count=3), ViewSpec(16, (0.05, 0.3), count=4, is_global=False)]) == 3
    assert n_global([ViewSpec(16, (0.05, 0.3), is_global=False)]) == 0
    for specs in (dino_views(32, n_local=0), dino_views(32, n_local=4), two_view_preset(32), siamese_views(32, 3),
                  swav_views(32, 0), swav_views(32, 6)):
        assert n_global(specs) == 2 == MultiCrop(specs).n_global_views
    assert n_global(plain_views(32)) == n_global(tile_views(32, 0.5, 0.3)) == 1


def test_validation():
    with pytest.raises(ValueError):
        MultiCrop([ViewSpec(16, (0.05, 0.3), is_global=False), ViewSpec(32, (0.3, 1.0))])
    with pytest.raises(ValueError):
        ViewSpec(32, (0.5, 0.2))
    with pytest.raises(ValueError):
        ViewSpec(32, (0.2, 1.0), flip=1.5)
    with pytest.raises(ValueError):
        MultiCrop(dino_views(32))(torch.zeros(2, 1, 32, 32, dtype=torch.uint8))


def test_normalize_eval_path():
    x = images(b=2)
    torch.testing.assert_close(normalize(x), (x.float() / 255 - MEAN) / STD)
    assert normalize(x.float() / 255).dtype == torch.float32


def test_dino_views_hue_strength_reaches_every_view():
    specs = dino_views(32, n_local=2, hue=0.5)
    assert all(spec.jitter_strength == (0.4, 0.4, 0.2, 0.5) for spec in specs)
    assert all(spec.jitter_strength[3] == 0.1 for spec in dino_views(32, n_local=2))   # BYOL's default
