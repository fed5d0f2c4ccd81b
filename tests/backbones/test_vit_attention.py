"""ViT attention: explicit softmax path == fused SDPA path; attention maps are distributions."""
from __future__ import annotations

import torch

from nolabel.backbones import build_backbone
from nolabel.backbones.vit_layers import Attention, Block


def test_attention_paths_agree():
    torch.manual_seed(0)
    attn = Attention(dim=48, num_heads=4)
    x = torch.randn(2, 17, 48)
    out_explicit, weights = attn.forward_with_attention(x)
    torch.testing.assert_close(attn(x), out_explicit, atol=1e-5, rtol=1e-5)
    assert weights.shape == (2, 4, 17, 17)


def test_block_paths_agree():
    torch.manual_seed(0)
    block = Block(dim=48, num_heads=4, drop_path=0.1).eval()
    x = torch.randn(2, 17, 48)
    y, _ = block.forward_with_attention(x)
    torch.testing.assert_close(block(x), y, atol=1e-5, rtol=1e-5)


def test_model_paths_agree():
    torch.manual_seed(0)
    model = build_backbone("vit_tiny", image_size=32, depth=3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens, attn = model.forward_with_attention(x)
        torch.testing.assert_close(model.forward_tokens(x), tokens, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.get_last_selfattention(x), attn, atol=0, rtol=0)


def test_last_selfattention_shape_and_rows():
    torch.manual_seed(0)
    model = build_backbone("vit_tiny", image_size=32, depth=2).eval()
    for size in [(32, 32), (16, 24)]:
        with torch.no_grad():
            attn = model.get_last_selfattention(torch.randn(2, 3, *size))
        n = 1 + (size[0] // 4) * (size[1] // 4)
        assert attn.shape == (2, 3, n, n)
        assert torch.all(attn >= 0)
        torch.testing.assert_close(attn.sum(-1), torch.ones(2, 3, n), atol=1e-5, rtol=0)


def test_attention_gradients_flow_through_explicit_path():
    torch.manual_seed(0)
    model = build_backbone("vit_tiny", image_size=32, depth=1)
    attn = model.get_last_selfattention(torch.randn(1, 3, 32, 32))
    attn[:, :, 0, 1:].sum().backward()
    assert model.blocks[0].attn.qkv.weight.grad is not None
