"""The ViT's masked-image-modelling calls (a boolean mask with a mask token: iBOT; the indices
of the patches to keep: MAE), and that the plain calls every other method makes are unchanged:
against values recorded from the code before these calls existed, and bit for bit against
the plain forward written out here."""
from __future__ import annotations

import math

import pytest
import torch

from nolabel.backbones import build_backbone
from nolabel.backbones.pos_embed import sincos_2d


def tiny(seed=0, train=False):
    torch.manual_seed(seed)
    return build_backbone("vit_tiny", image_size=32, patch_size=8, depth=1, embed_dim=32, num_heads=2).train(train)


def inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, 32, 32, generator=g), torch.randn(2, 3, 16, 24, generator=g)


def plain_tokens(vit, x):
    """The forward every method used before masking existed: patches, CLS, positions, blocks, norm."""
    patches = vit.patch_embed(x)
    tokens = patches.flatten(2).transpose(1, 2)
    tokens = torch.cat([vit.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
    tokens = tokens + vit.interpolate_pos_encoding(*patches.shape[-2:])
    for block in vit.blocks:
        tokens = block(tokens)
    return vit.norm(tokens)


# Recorded with the code of commit 315bcfe (before masking), torch 2.13 CPU: tiny(0).eval(), inputs().
# forward(x)[0, :8], forward_tokens(x)[1, 5, :8], forward_tokens(16 x 24 input)[0, 3, :8]
RECORDED_CLS = [-0.356348, -1.31134, -0.139475, 1.024243, -1.054888, 1.714929, 0.505915, -0.176962]
RECORDED_TOKEN = [-1.272535, -1.808632, -0.637489, -1.016561, 0.109282, 0.129658, -0.565294, -0.996501]
RECORDED_SMALL = [-0.610944, -0.139034, -1.070228, 0.718499, 1.567446, -0.808015, -0.672647, -1.215305]
RECORDED_SQUARES = 1087.9409770702744         # (forward_tokens(x) ** 2).sum()
RECORDED_CLS_ATTENTION = 0.23531436437549014  # (attention[:, :, 0] ** 2).sum()
RECORDED_KEYS = ["blocks.0.attn.proj.bias", "blocks.0.attn.proj.weight", "blocks.0.attn.qkv.bias",
                 "blocks.0.attn.qkv.weight", "blocks.0.mlp.fc1.bias", "blocks.0.mlp.fc1.weight",
                 "blocks.0.mlp.fc2.bias", "blocks.0.mlp.fc2.weight", "blocks.0.norm1.bias", "blocks.0.norm1.weight",
                 "blocks.0.norm2.bias", "blocks.0.norm2.weight", "cls_token", "norm.bias", "norm.weight",
                 "patch_embed.bias", "patch_embed.weight", "pos_embed"]


@torch.no_grad()
def test_plain_calls_give_the_recorded_values():
    vit = tiny()
    x, small = inputs()
    tokens = vit.forward_tokens(x)
    torch.testing.assert_close(vit(x)[0, :8], torch.tensor(RECORDED_CLS), rtol=0, atol=2e-6)
    torch.testing.assert_close(tokens[1, 5, :8], torch.tensor(RECORDED_TOKEN), rtol=0, atol=2e-6)
    torch.testing.assert_close(vit.forward_tokens(small)[0, 3, :8], torch.tensor(RECORDED_SMALL), rtol=0, atol=2e-6)
    assert float((tokens.double() ** 2).sum()) == pytest.approx(RECORDED_SQUARES, rel=1e-6)
    attention = vit.get_last_selfattention(x)
    assert float((attention.double()[:, :, 0] ** 2).sum()) == pytest.approx(RECORDED_CLS_ATTENTION, rel=1e-5)
    # no new parameter or buffer: same state dict, same initial draws, checkpoints load as before
    assert sorted(vit.state_dict()) == RECORDED_KEYS
    assert sum(p.numel() for p in vit.parameters()) == 19520


@pytest.mark.parametrize("train", [False, True])
@torch.no_grad()
def test_plain_calls_are_bitwise_the_plain_forward(train):
    vit = tiny(train=train)
    for x in inputs():
        want = plain_tokens(vit, x)
        assert torch.equal(vit.forward_tokens(x), want)
        assert torch.equal(vit(x), want[:, 0])
    x = inputs()[0]
    # the explicit-attention path (attention maps) is the same function in eval mode
    if not train:
        torch.testing.assert_close(vit.forward_with_attention(x)[0], plain_tokens(vit, x), rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_keep_runs_the_blocks_on_cls_and_the_kept_patches_only():
    vit = tiny()
    x = inputs()[0]                                                  # 4 x 4 grid, 16 patches
    keep = torch.tensor([[0, 5, 6, 15], [3, 2, 9, 12]])
    got = vit.forward_tokens(x, keep=keep)
    assert got.shape == (2, 5, 32)
    # by hand: positions added to all 17 tokens, then CLS and the kept ones (in keep's order) selected
    full = vit.prepare_tokens(x)
    for b in range(2):
        tokens = torch.stack([full[b, 0]] + [full[b, 1 + int(i)] for i in keep[b]])[None]
        for block in vit.blocks:
            tokens = block(tokens)
        torch.testing.assert_close(got[b], vit.norm(tokens)[0], rtol=1e-5, atol=1e-6)
    # the dropped patches do not reach the output: change their pixels, nothing changes
    changed = x.clone()
    for b in range(2):
        for i in set(range(16)) - set(keep[b].tolist()):
            r, c = divmod(i, 4)
            changed[b, :, 8 * r:8 * r + 8, 8 * c:8 * c + 8] = torch.randn(3, 8, 8)
    torch.testing.assert_close(vit.forward_tokens(changed, keep=keep), got, rtol=0, atol=1e-6)
    # but a kept patch does
    changed[0, :, :8, :8] += 1.0                                       # patch 0, kept in image 0
    assert not torch.allclose(vit.forward_tokens(changed, keep=keep)[0], got[0], atol=1e-4)


def test_mask_replaces_patch_embeddings_before_positions():
    vit = tiny()
    x = inputs()[0]
    token = torch.nn.Parameter(torch.randn(1, 1, 32))
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[0, [1, 2, 7]] = True
    mask[1, 10] = True
    got = vit.prepare_tokens(x, mask=mask, mask_token=token)
    plain = vit.prepare_tokens(x)
    pos = vit.pos_embed[0]
    for b in range(2):
        for i in range(16):
            want = token[0, 0] + pos[1 + i] if mask[b, i] else plain[b, 1 + i]
            torch.testing.assert_close(got[b, 1 + i], want, rtol=0, atol=1e-6)
        torch.testing.assert_close(got[b, 0], plain[b, 0], rtol=0, atol=0)
    # the masked patches' pixels no longer matter
    changed = x.clone()
    changed[0, :, 0:8, 8:24] = 5.0                                      # patches 1 and 2 of image 0
    torch.testing.assert_close(vit.forward_tokens(changed, mask, token), vit.forward_tokens(x, mask, token),
                               rtol=0, atol=1e-6)
    # the token learns; a mask with nothing hidden gives the plain output and still reaches the token
    vit.forward_tokens(x, mask, token).sum().backward()
    assert token.grad is not None and token.grad.abs().sum() > 0
    nothing = torch.zeros(2, 16, dtype=torch.bool)
    with torch.no_grad():
        assert torch.equal(vit.forward_tokens(x, nothing, token), vit.forward_tokens(x))


def test_mask_and_keep_errors():
    vit = tiny()
    x = inputs()[0]
    with pytest.raises(ValueError, match="mask_token"):
        vit.forward_tokens(x, mask=torch.zeros(2, 16, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool of shape"):
        vit.forward_tokens(x, mask=torch.zeros(2, 15, dtype=torch.bool), mask_token=torch.zeros(32))
    with pytest.raises(ValueError, match="keep"):
        vit.forward_tokens(x, keep=torch.zeros(3, 2, dtype=torch.long))


def test_sincos_2d_is_the_formula():
    h, w, dim = 3, 5, 8
    got = sincos_2d((h, w), dim)
    assert got.shape == (h * w, dim) and got.dtype == torch.float32
    quarter = dim // 4
    for r in range(h):
        for c in range(w):
            row = []
            for t in (r, c):
                f = [10000 ** (-k / quarter) for k in range(quarter)]
                row += [math.sin(t * fk) for fk in f] + [math.cos(t * fk) for fk in f]
            torch.testing.assert_close(got[r * w + c], torch.tensor(row), rtol=0, atol=1e-6)
    assert len({tuple(v.tolist()) for v in got}) == h * w              # every position distinct
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d((2, 2), 6)
