"""Projection heads: one MLP builder for every method, plus the weight-normalised
prototype layer of DINO and iBOT, and MAE's pixel decoder (SwAV's prototypes are a plain
bias-free linear layer, renormalised each step: methods/swav.py)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nolabel.backbones.pos_embed import sincos_2d
from nolabel.backbones.vit import trunc_normal_
from nolabel.backbones.vit_layers import LAYER_NORM_EPS, Block
from nolabel.ops.masking import scatter_visible
from nolabel.ops.precision import autocast_off

_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}
_NORMS = {"bn": nn.BatchNorm1d, "ln": nn.LayerNorm}


def mlp(in_dim: int, hidden_dim: int, out_dim: int, n_layers: int = 2, norm: str | None = None,
        act: str = "relu", last_norm: str | None = None, last_bias: bool = True) -> nn.Sequential:
    """``n_layers`` linear layers: (Linear, norm?, act) x (n_layers - 1), then Linear
    (+ optional ``last_norm``, e.g. the affine-free BN of some projectors).

    in (B, in_dim) -> out (B, out_dim). ``norm`` in {None, "bn", "ln"}; ``act`` in
    {"gelu", "relu"}. With ``n_layers == 1`` it is a single Linear.
    """
    if n_layers < 1:
        raise ValueError(f"an MLP needs at least one layer, got n_layers={n_layers}")
    if act not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; choose from {sorted(_ACTIVATIONS)}")
    for n in (norm, last_norm):
        if n is not None and n not in _NORMS:
            raise ValueError(f"unknown norm {n!r}; choose from {sorted(_NORMS)} or None")
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(n_layers - 1):
        layers.append(nn.Linear(dim, hidden_dim, bias=norm is None))
        if norm is not None:
            layers.append(_NORMS[norm](hidden_dim))
        layers.append(_ACTIVATIONS[act]())
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim, bias=last_bias))
    if last_norm is not None:
        layers.append(_NORMS[last_norm](out_dim, elementwise_affine=False) if last_norm == "ln"
                      else _NORMS[last_norm](out_dim, affine=False))
    return nn.Sequential(*layers)


class WeightNormLinear(nn.Module):
    """Weight-normalised linear layer without bias (Salimans and Kingma, 2016):
    ``W = g * V / ||V||`` row-wise. With ``learn_scale=False`` the scale g is fixed to
    1 (DINO's ``norm_last_layer``, thesis 5.6.6), so each output is a cosine similarity
    between the (l2-normalised) input and a prototype direction.

    x (B, in_dim) -> (B, out_dim).
    """

    def __init__(self, in_dim: int, out_dim: int, learn_scale: bool = False):
        super().__init__()
        self.direction = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.trunc_normal_(self.direction, std=0.02)
        self.scale = nn.Parameter(torch.ones(out_dim)) if learn_scale else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = F.normalize(self.direction, dim=1)
        if self.scale is not None:
            weight = weight * self.scale[:, None]
        return F.linear(x, weight)


class DINOHead(nn.Module):
    """DINO projection head (thesis 5.3.1 and 5.6.6): a 3-layer MLP (hidden 2048, GELU,
    no BN with ViT), an l2-normalised bottleneck of 256 and a weight-normalised layer
    with K outputs. x (B, in_dim) -> logits (B, K).
    """

    def __init__(self, in_dim: int, out_dim: int = 65536, hidden_dim: int = 2048,
                 bottleneck_dim: int = 256, n_layers: int = 3, use_bn: bool = False,
                 norm_last_layer: bool = True):
        super().__init__()
        self.mlp = mlp(in_dim, hidden_dim, bottleneck_dim, n_layers=n_layers,
                       norm="bn" if use_bn else None, act="gelu")
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                # the reference code's init: bounds a=-2, b=2 are absolute (100 std), so in effect
                # a plain normal of std 0.02 (as the ViT's, backbones.vit.trunc_normal_)
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, learn_scale=not norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.normalize(self.mlp(x).float(), dim=-1)   # (B, bottleneck_dim), the l2 bottleneck
        with autocast_off(z):                  # cosine logits, divided by temperatures of 0.04-0.1: float32
            return self.last_layer(z)          # (B, K)


class MaskedDecoder(nn.Module):
    """MAE's decoder (He et al. 2022, sec. 3 "MAE decoder"; A.1), used only in pre-training.

    The encoder's tokens of the visible patches are projected to the decoder width, a shared
    learned mask token fills the hidden positions, fixed 2-D sin-cos position embeddings are
    added to the full set (A.1; the [CLS] slot gets none), ``depth`` pre-norm Transformer
    blocks and a LayerNorm run over it, and a linear layer predicts each patch's pixels.

    Fixed rather than learned positions: most of the decoder's input is copies of one mask
    token, told apart only by their positions, so they must be informative from the first
    step; sin-cos embeddings are, at no parameters, and they are the paper's choice.

    tokens (B, 1 + n, in_dim) of CLS and the visible patches ``keep`` (int64 (B, n)) ->
    (B, N, out_dim) predictions for every patch of the ``grid``.
    """

    def __init__(self, in_dim: int, grid: tuple[int, int], out_dim: int, dim: int = 512, depth: int = 8,
                 num_heads: int = 16, mlp_ratio: float = 4.0):
        super().__init__()
        self.n_patches = grid[0] * grid[1]
        self.embed = nn.Linear(in_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        pos = torch.cat([torch.zeros(1, dim), sincos_2d(grid, dim)])          # (1 + N, dim), CLS row 0
        self.register_buffer("pos_embed", pos.unsqueeze(0), persistent=False)  # derived, not saved
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.pred = nn.Linear(dim, out_dim)
        with torch.no_grad():      # the ViT's initialisation (backbones.vit)
            trunc_normal_(self.mask_token)
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    trunc_normal_(m.weight)
                    nn.init.zeros_(m.bias)

    def forward(self, tokens: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)                                                   # (B, 1 + n, dim)
        patches = scatter_visible(x[:, 1:], keep, self.n_patches, self.mask_token)   # (B, N, dim)
        x = torch.cat([x[:, :1], patches], dim=1) + self.pos_embed.to(x.dtype)   # (B, 1 + N, dim)
        for block in self.blocks:
            x = block(x)
        return self.pred(self.norm(x))[:, 1:]                                    # (B, N, out_dim)
