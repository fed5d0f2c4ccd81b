"""ViT position embeddings: bicubic resizing to other grids, CLS row kept apart."""
from __future__ import annotations

import pytest
import torch

from nolabel.backbones import build_backbone
from nolabel.backbones.pos_embed import interpolate_pos_embed


def tiny_vit():
    torch.manual_seed(0)
    return build_backbone("vit_tiny", image_size=32, depth=2).eval()  # patch 4, 8x8 grid


@pytest.mark.parametrize("size", [(16, 16), (64, 64), (224, 224), (32, 48), (8, 4)])
def test_other_input_sizes(size):
    model = tiny_vit()
    with torch.no_grad():
        tokens = model.forward_tokens(torch.randn(1, 3, *size))
    assert tokens.shape == (1, 1 + (size[0] // 4) * (size[1] // 4), 192)
    assert torch.isfinite(tokens).all()


def test_native_size_same_with_forced_interpolation(monkeypatch):
    model = tiny_vit()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        direct = model(x)
        monkeypatch.setattr(
            model,
            "interpolate_pos_encoding",
            lambda h, w: interpolate_pos_embed(model.pos_embed, model.grid_size, (h, w)),
        )
        forced = model(x)
    torch.testing.assert_close(forced, direct, atol=1e-6, rtol=0)


def test_identity_at_same_grid_and_cls_kept():
    pos = torch.randn(1, 1 + 6 * 5, 8)
    torch.testing.assert_close(interpolate_pos_embed(pos, (6, 5), (6, 5)), pos, atol=1e-6, rtol=0)
    resized = interpolate_pos_embed(pos, (6, 5), (3, 7))
    assert resized.shape == (1, 1 + 21, 8)
    assert torch.equal(resized[:, 0], pos[:, 0])


def test_resize_is_spatial():
    # a constant field stays constant; a horizontal ramp stays a monotone horizontal ramp
    const = torch.full((1, 1 + 16, 2), 3.0)
    torch.testing.assert_close(interpolate_pos_embed(const, (4, 4), (7, 9)), torch.full((1, 64, 2), 3.0))
    ramp = torch.arange(4.0).repeat(4).reshape(1, 16, 1)  # value = column index
    pos = torch.cat([torch.zeros(1, 1, 1), ramp], dim=1)
    up = interpolate_pos_embed(pos, (4, 4), (8, 8))[0, 1:, 0].reshape(8, 8)
    assert torch.allclose(up, up[:1].expand(8, 8))  # rows identical
    assert torch.all(up[0, 1:] >= up[0, :-1])  # increasing along width


def test_gradient_reaches_pos_embed_through_interpolation():
    model = tiny_vit()
    out = model(torch.randn(1, 3, 16, 16))  # (1, D), layer-normed: use a non-constant loss
    (out * torch.randn_like(out)).sum().backward()
    assert model.pos_embed.grad is not None and model.pos_embed.grad[0, 1:].abs().sum() > 0


def test_low_precision_pos_embed():
    pos = torch.randn(1, 1 + 16, 4, dtype=torch.bfloat16)
    out = interpolate_pos_embed(pos, (4, 4), (2, 2))
    assert out.dtype == torch.bfloat16 and out.shape == (1, 5, 4)


def naive_reference_resize(pos, src, dst):
    """DINO's reference rule, written out: the patch rows as a (1, D, h0, w0) image, resized by
    bicubic interpolation with scale factors ((h + 0.1) / h0, (w + 0.1) / w0), rows first, and
    the output checked to be (h, w); CLS row kept."""
    (h0, w0), (h, w) = src, dst
    dim = pos.shape[-1]
    image = pos[:, 1:].reshape(1, h0, w0, dim).permute(0, 3, 1, 2)
    image = torch.nn.functional.interpolate(image, scale_factor=((h + 0.1) / h0, (w + 0.1) / w0),
                                            mode="bicubic", align_corners=False)
    assert image.shape[-2:] == (h, w)
    return torch.cat([pos[:, :1], image.permute(0, 2, 3, 1).reshape(1, h * w, dim)], dim=1)


@pytest.mark.parametrize("dst", [(4, 4), (12, 12), (4, 6), (6, 3), (16, 10), (1, 2)])
def test_default_is_the_reference_scale_factor_rule(dst):
    torch.manual_seed(0)
    pos = torch.randn(1, 1 + 8 * 8, 5)
    got = interpolate_pos_embed(pos, (8, 8), dst)
    torch.testing.assert_close(got, naive_reference_resize(pos, (8, 8), dst), rtol=0, atol=0)
    # ... which is not the exact resize: size= samples other positions
    exact = interpolate_pos_embed(pos, (8, 8), dst, mode="size")
    assert exact.shape == got.shape and (exact - got)[:, 1:].abs().max() > 1e-3


def test_non_square_source_grid():
    torch.manual_seed(0)
    pos = torch.randn(1, 1 + 6 * 5, 3)
    for dst in [(3, 7), (12, 10), (6, 9)]:       # (6, 9): rows kept, but resampled by the reference too
        torch.testing.assert_close(interpolate_pos_embed(pos, (6, 5), dst),
                                   naive_reference_resize(pos, (6, 5), dst), rtol=0, atol=0)


def test_vit_non_square_input_uses_the_rule_and_size_is_one_option_away():
    model = tiny_vit()                       # 8x8 native grid, patch 4
    x = torch.randn(1, 3, 32, 48)            # 8x12 grid: rows kept, columns resized
    with torch.no_grad():
        torch.testing.assert_close(model.interpolate_pos_encoding(8, 12),
                                   naive_reference_resize(model.pos_embed, (8, 8), (8, 12)), rtol=0, atol=0)
        reference = model(x)
        assert model.interpolate_pos_encoding(8, 8) is model.pos_embed   # native grid: unchanged
        model.pos_interp = "size"
        torch.testing.assert_close(model.interpolate_pos_encoding(8, 12),
                                   interpolate_pos_embed(model.pos_embed, (8, 8), (8, 12), mode="size"))
        exact = model(x)
    assert not torch.allclose(reference, exact, atol=1e-5)


def test_same_grid_returns_the_embedding_and_bad_mode_raises():
    pos = torch.randn(1, 1 + 16, 4)
    for mode in ("reference", "size"):
        assert interpolate_pos_embed(pos, (4, 4), (4, 4), mode=mode) is pos
    with pytest.raises(ValueError, match="reference, size"):
        interpolate_pos_embed(pos, (4, 4), (2, 2), mode="bilinear")
