"""Vision Transformer (Dosovitskiy et al. 2020) as used by DINO (thesis ch. 5, DeiT variant).

Image (B, 3, H, W) -> non-overlapping p x p patches, linearly embedded (a stride-p conv) ->
prepend a learned CLS token -> add learned position embeddings -> ``depth`` pre-norm blocks
-> final LayerNorm. ``forward`` returns the CLS token, ``forward_tokens`` all tokens; for masked
image modelling ``forward_tokens`` also takes a boolean mask with a mask token (iBOT) or the
indices of the patches to keep (MAE), see ``prepare_tokens``.

Sizes (MLP ratio 4, 12 blocks): vit_tiny 192-d / 3 heads, vit_small 384-d / 6 heads,
vit_base 768-d / 12 heads. The default patch size follows the image size (4 for <= 32 px,
8 for <= 64 px, else 16) so small images still give a useful number of tokens.

Any input whose H and W are multiples of the patch size is accepted: the position embeddings,
defined for the ``image_size / patch_size`` grid, are bicubically resized to the input's grid
(``pos_embed.interpolate_pos_embed``). Other sizes raise a ValueError (no implicit cropping).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from nolabel.backbones.pos_embed import interpolate_pos_embed
from nolabel.backbones.registry import register
from nolabel.backbones.sobel import Sobel
from nolabel.backbones.vit_layers import LAYER_NORM_EPS, Block

INIT_STD = 0.02


def default_patch_size(image_size: int) -> int:
    """4 for image_size <= 32, 8 for <= 64, else 16."""
    if image_size <= 32:
        return 4
    if image_size <= 64:
        return 8
    return 16


def trunc_normal_(tensor: Tensor, std: float = INIT_STD, bound: float = 2.0) -> Tensor:
    """In-place normal(0, std) truncated to [-bound, bound], in absolute units.

    The thesis does not give the initialisation; DINO's reference code calls
    ``trunc_normal_(w, std=.02)`` with the default bounds a=-2, b=2, absolute values, i.e.
    100 std: in effect a plain normal of std 0.02 (the default here). ``bound=2 * std``
    truncates at 2 std instead, which lowers the realised std to 0.88 std (0.0176).
    """
    return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-bound, b=bound)


class VisionTransformer(nn.Module):
    """ViT trunk: (B, 3, H, W) normalised images -> (B, embed_dim) CLS features.

    Args:
        name: registry name, recorded in ``spec``.
        image_size: the (square) size the position embeddings are defined for.
        patch_size: p; None = ``default_patch_size(image_size)``. Must divide ``image_size``.
        embed_dim: D. depth: number of blocks. num_heads: must divide D.
        mlp_ratio: MLP hidden size / D.
        drop_path_rate: stochastic depth of the last block; block i uses
            ``drop_path_rate * i / (depth - 1)`` (linear from 0).

    Attributes:
        num_features, embed_dim: D. patch_size: p. num_heads, depth.
        grid_size: (image_size / p, image_size / p), the native patch grid.
        spec: all constructor values, resolved (``patch_size`` included), so that
            ``build_backbone(**spec)`` rebuilds this architecture.

    Initialisation (DINO's reference code): normal with std 0.02, truncated at +-2 in absolute
    units so in effect untruncated (see ``trunc_normal_``), for Linear weights, position
    embeddings and CLS token; zero Linear biases; LayerNorm weight 1, bias 0; the
    patch-embedding conv keeps PyTorch's default (fan-in uniform) initialisation.

    ``pos_interp`` (a class attribute, set it on an instance to change it): how position
    embeddings are resized to other grids, ``"reference"`` (DINO's scale-factor rule, the
    default) or ``"size"`` (the exact resize); see :mod:`nolabel.backbones.pos_embed`.
    """

    pos_interp: str = "reference"

    def __init__(
        self,
        *,
        name: str = "vit",
        image_size: int = 224,
        patch_size: int | None = None,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        sobel: bool = False,
    ) -> None:
        super().__init__()
        patch_size = default_patch_size(image_size) if patch_size is None else int(patch_size)
        if patch_size < 1 or image_size < patch_size or image_size % patch_size != 0:
            raise ValueError(f"patch_size {patch_size} must divide image_size {image_size}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        if embed_dim < 1 or num_heads < 1 or embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim {embed_dim} must be a positive multiple of num_heads {num_heads}")
        self.patch_size = patch_size
        self.embed_dim = self.num_features = embed_dim
        self.num_heads = num_heads
        self.depth = depth
        self.grid_size = (image_size // patch_size, image_size // patch_size)
        num_patches = self.grid_size[0] * self.grid_size[1]

        # Optional fixed Sobel input (DeepCluster, thesis 3.2.1): RGB in, 2 gradient channels to the patches.
        self.sobel: nn.Module = Sobel() if sobel else nn.Identity()
        in_chans = Sobel.out_channels if sobel else 3
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + num_patches, embed_dim))
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, rate) for rate in rates)
        self.norm = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS)

        self.spec: dict = {
            "name": name,
            "image_size": int(image_size),
            "patch_size": patch_size,
            "embed_dim": embed_dim,
            "depth": depth,
            "num_heads": num_heads,
            "mlp_ratio": float(mlp_ratio),
            "drop_path_rate": float(drop_path_rate),
        }
        if sobel:
            self.spec["sobel"] = True
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        trunc_normal_(self.pos_embed)
        trunc_normal_(self.cls_token)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def interpolate_pos_encoding(self, h: int, w: int) -> Tensor:
        """Position embeddings for an (h, w) patch grid: (1, 1 + h * w, D).

        The stored ``pos_embed`` on the native grid, else its bicubic resize (CLS row kept)
        by the ``pos_interp`` rule.
        """
        if (h, w) == self.grid_size:
            return self.pos_embed
        return interpolate_pos_embed(self.pos_embed, self.grid_size, (h, w), mode=self.pos_interp)

    def prepare_tokens(self, x: Tensor, mask: Tensor | None = None, mask_token: Tensor | None = None,
                       keep: Tensor | None = None) -> Tensor:
        """Embed patches, prepend CLS, add positions: (B, 3, H, W) -> (B, 1 + N, D), N = HW / p^2.

        Patches are numbered row-major over the (H/p, W/p) grid. Two optional ways to hide patches,
        which leave the plain call (neither given) as it was:

        - ``mask``: bool (B, N), True where the patch embedding is replaced by ``mask_token`` ((D,)
          or (1, 1, D), a learned vector the caller owns) *before* the position embeddings are
          added, so a masked token still says where it is (BEiT, Bao et al. 2022; iBOT sec. 3.1).
        - ``keep``: int64 (B, n), the indices of the patches to keep; the others are dropped
          after the positions are added, so the blocks see only CLS and the n visible patches
          (MAE sec. 3, "MAE encoder"): returns (B, 1 + n, D).
        """
        if x.dim() != 4:
            raise ValueError(f"expected a (B, 3, H, W) batch, got shape {tuple(x.shape)}")
        height, width = x.shape[-2:]
        p = self.patch_size
        if height % p != 0 or width % p != 0:
            raise ValueError(f"input size {height}x{width} is not a multiple of the patch size {p}")
        patches = self.patch_embed(self.sobel(x))  # (B, D, H/p, W/p)
        h, w = patches.shape[-2:]
        tokens = patches.flatten(2).transpose(1, 2)  # (B, N, D)
        if mask is not None:
            tokens = _replace_masked(tokens, mask, mask_token)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)  # (B, 1, D)
        tokens = torch.cat([cls, tokens], dim=1)  # (B, 1 + N, D)
        tokens = tokens + self.interpolate_pos_encoding(h, w)
        if keep is not None:
            tokens = _keep_patches(tokens, keep)  # (B, 1 + n, D)
        return tokens

    def forward_tokens(self, x: Tensor, mask: Tensor | None = None, mask_token: Tensor | None = None,
                       keep: Tensor | None = None) -> Tensor:
        """All tokens after the final LayerNorm: (B, 3, H, W) -> (B, 1 + N, D); [:, 0] is CLS.

        ``mask``/``mask_token`` and ``keep`` as in :meth:`prepare_tokens` (with ``keep``: (B, 1 + n, D))."""
        tokens = self.prepare_tokens(x, mask, mask_token, keep)  # (B, 1 + N, D)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)

    def forward_with_attention(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``forward_tokens`` with the last block on the explicit-attention path.

        Returns:
            (B, 1 + N, D) normalised tokens (equal to ``forward_tokens(x)`` in eval mode) and
            (B, heads, 1 + N, 1 + N) softmax attention of the last block.
        """
        tokens = self.prepare_tokens(x)  # (B, 1 + N, D)
        for block in self.blocks[:-1]:
            tokens = block(tokens)
        tokens, attn = self.blocks[-1].forward_with_attention(tokens)
        return self.norm(tokens), attn

    def get_last_selfattention(self, x: Tensor) -> Tensor:
        """Softmax attention of the last block: (B, 3, H, W) -> (B, heads, 1 + N, 1 + N)."""
        return self.forward_with_attention(x)[1]

    def forward(self, x: Tensor) -> Tensor:
        """CLS token after the final LayerNorm: (B, 3, H, W) -> (B, D)."""
        return self.forward_tokens(x)[:, 0]


def _replace_masked(tokens: Tensor, mask: Tensor, mask_token: Tensor | None) -> Tensor:
    """Patch tokens (B, N, D) with the rows where ``mask`` (bool (B, N)) is True set to
    ``mask_token`` ((D,) or (1, 1, D)). ``torch.where`` keeps the token in the graph even when
    nothing is masked (no unused parameter under DistributedDataParallel)."""
    if mask_token is None:
        raise ValueError("a mask needs a mask_token to put in place of the masked patches")
    if mask.shape != tokens.shape[:2] or mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool of shape {tuple(tokens.shape[:2])} (batch, patches), "
                         f"got {mask.dtype} {tuple(mask.shape)}")
    token = mask_token.reshape(1, 1, -1).to(tokens.dtype)  # (1, 1, D)
    return torch.where(mask.unsqueeze(-1), token, tokens)


def _keep_patches(tokens: Tensor, keep: Tensor) -> Tensor:
    """CLS and the patches ``keep`` (int64 (B, n)) of tokens (B, 1 + N, D) -> (B, 1 + n, D)."""
    if keep.dim() != 2 or keep.shape[0] != tokens.shape[0]:
        raise ValueError(f"keep must be (batch, n) patch indices, got shape {tuple(keep.shape)}")
    index = keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])  # (B, n, D)
    return torch.cat([tokens[:, :1], tokens[:, 1:].gather(1, index)], dim=1)


def is_vit(model: nn.Module) -> bool:
    """Whether ``model`` is a VisionTransformer, looking through DDP (``.module``) and
    ``torch.compile`` (``._orig_mod``) wrappers."""
    for _ in range(8):
        if isinstance(model, VisionTransformer):
            return True
        inner = getattr(model, "_orig_mod", None)
        if inner is None:
            inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return False
        model = inner
    return False


# name -> (embed_dim, num_heads, params at /16); 12 blocks, MLP ratio 4 (Dosovitskiy et al. 2020;
# the thesis' ViT-S/16 and ViT-B/16, Table 5.2).
VIT_SIZES = {"vit_tiny": (192, 3, "5.5M"), "vit_small": (384, 6, "21.7M"), "vit_base": (768, 12, "85.8M")}


def _vit_factory(name: str, dim: int, heads: int, params: str):
    def factory(image_size: int = 224, *, patch_size: int | None = None, embed_dim: int = dim, depth: int = 12,
                num_heads: int = heads, mlp_ratio: float = 4.0, drop_path_rate: float = 0.0,
                sobel: bool = False) -> VisionTransformer:
        return VisionTransformer(name=name, image_size=image_size, patch_size=patch_size, embed_dim=embed_dim,
                                 depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                                 drop_path_rate=drop_path_rate, sobel=sobel)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"{name}: {dim}-d, 12 blocks, {heads} heads ({params} params at /16)."
    return register(name)(factory)


vit_tiny, vit_small, vit_base = (_vit_factory(n, *VIT_SIZES[n]) for n in VIT_SIZES)
