"""Transformer encoder layers of the Vision Transformer (Dosovitskiy et al. 2020).

A ``Block`` is the pre-norm residual pair used by ViT / DeiT / DINO::

    x = x + DropPath(Attention(LayerNorm(x)))
    x = x + DropPath(MLP(LayerNorm(x)))

Attention has two paths that compute the same function: ``forward`` calls
``torch.nn.functional.scaled_dot_product_attention`` (fused kernels, never materialises the
attention matrix), ``forward_with_attention`` computes softmax(q k^T / sqrt(d)) explicitly and
returns it too (for attention maps).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

LAYER_NORM_EPS = 1e-6


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016) on a residual branch, per sample.

    In training, each sample's branch output is zeroed with probability ``drop_prob`` and the
    kept ones are scaled by ``1 / (1 - drop_prob)``; identity in eval mode or when ``drop_prob == 0``.
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        """(B, ...) -> (B, ...)."""
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep_prob)  # (B, 1, ..., 1)
        return x * mask / keep_prob

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class Mlp(nn.Module):
    """Linear -> GELU -> Linear: (B, T, D) -> (B, T, D), hidden size ``hidden_dim``."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention, (B, T, D) -> (B, T, D); qkv projection with bias."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"embed_dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, T, D) -> q, k, v, each (B, heads, T, D/heads)."""
        b, t, _ = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, self.head_dim)  # (B, T, 3, h, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, h, T, d)
        return q, k, v

    def _merge(self, out: Tensor) -> Tensor:
        """(B, heads, T, d) -> projected (B, T, heads * d)."""
        b, _, t, _ = out.shape
        return self.proj(out.transpose(1, 2).reshape(b, t, -1))

    def forward(self, x: Tensor) -> Tensor:
        """Fused path: (B, T, D) -> (B, T, D)."""
        q, k, v = self._qkv(x)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, h, T, d), scale 1/sqrt(d)
        return self._merge(out)

    def forward_with_attention(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Explicit path: (B, T, D) -> ((B, T, D) output, (B, heads, T, T) softmax attention)."""
        q, k, v = self._qkv(x)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, h, T, T), rows sum to 1
        return self._merge(attn @ v), attn


class Block(nn.Module):
    """Pre-norm transformer block: (B, T, D) -> (B, T, D)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def forward_with_attention(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Same output as ``forward`` (in eval mode) plus the (B, heads, T, T) attention."""
        y, attn = self.attn.forward_with_attention(self.norm1(x))
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x))), attn
