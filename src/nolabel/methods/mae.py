"""MAE: masked autoencoders (He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners").

A random 75% of the patches are hidden; the ViT encoder sees only the visible ones (and
its [CLS] token); a light Transformer decoder gets the encoded visible tokens back in place,
a mask token everywhere else, and predicts the pixels of every patch; the loss is the MSE
on the hidden patches only, against per-patch normalised pixels (sec. 3). The decoder is
thrown away: the encoder is what evaluation and export use.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nolabel.backbones.pos_embed import sincos_2d
from nolabel.heads import MaskedDecoder
from nolabel.losses.reconstruction import masked_mse, patchify
from nolabel.methods import register
from nolabel.methods.base import Method, RunShape, fill
from nolabel.ops.masking import random_masking
from nolabel.view_presets import plain_views
from nolabel.views import SMALL_IMAGE, ViewSpec


@dataclass
class MaeConfig:
    # Masking (sec. 3, Fig. 5): 75% of the patches hidden, uniformly at random per image; 75% is
    # best for both fine-tuning and linear probing. Kept for 32-64 px images: the ViT's default
    # patch (4 at 32 px, 8 at 64 px) gives an 8 x 8 grid, 16 patches visible. At 64 px
    # --model.patch_size=4 gives 16 x 16 (64 visible), at 4x the encoder's cost.
    mask_ratio: float = 0.75
    norm_pix_loss: bool = True          # per-patch normalised pixels as targets (sec. 3, Table 1c)
    # Decoder (sec. 3, A.1; Table 1a-b): 8 blocks of width 512 from 96 px up. Below 96 px
    # (32-64 px, CPU budgets): 4 blocks of width 128, a quarter of the encoder's cost or less
    # at vit_tiny; depth matters for linear probing (Table 1a), so 4 rather than 1-2.
    decoder_dim: int | None = None      # None: 512 from 96 px up, 128 below
    decoder_depth: int | None = None    # None: 8 from 96 px up, 4 below
    decoder_num_heads: int | None = None   # None: heads of width 32 (16 at 512, 4 at 128)
    # Encoder positions fixed to 2-D sin-cos, as the paper's (A.1); false keeps the ViT's learned ones.
    sincos_pos_embed: bool = True
    # Views (A.1, Table 1f): one random-resized crop (area in (scale_min, 1)) + flip, no colour
    # augmentation (colour jitter lowers accuracy, Table 1f). 0.2: the released recipe's bound.
    scale_min: float = 0.2


def fix_sincos_positions_(vit: nn.Module) -> None:
    """Overwrite the ViT's position embeddings with fixed 2-D sin-cos ones (zero for [CLS])
    and stop their training (MAE A.1)."""
    pos = torch.cat([torch.zeros(1, vit.embed_dim), sincos_2d(vit.grid_size, vit.embed_dim)])
    with torch.no_grad():
        vit.pos_embed.copy_(pos.unsqueeze(0))
    vit.pos_embed.requires_grad_(False)


@register
class Mae(Method):
    name = "mae"
    requires_vit = True
    Config = MaeConfig
    # A.1, Table 8: AdamW, betas (0.9, 0.95), base lr 1.5e-4 x batch / 256, weight decay 0.05,
    # warm-up (40 of 800-1600 epochs; here the loop's default, 10% of the run up to 10 epochs)
    # then cosine decay; no gradient clipping.
    default_optim = {"optimizer": "adamw", "lr": 1.5e-4, "min_lr": 0.0, "weight_decay": 0.05,
                     "weight_decay_end": 0.05, "clip_grad": 0.0}
    adam_betas = (0.9, 0.95)
    encoder_prefix = "backbone"

    @classmethod
    def check_config(cls, cfg: MaeConfig) -> None:
        if not 0.0 < cfg.mask_ratio < 1.0:
            raise ValueError(f"--mae.mask_ratio={cfg.mask_ratio}: must be in (0, 1)")
        dim, heads = cfg.decoder_dim, cfg.decoder_num_heads
        if dim is not None and heads is not None and dim % heads:
            raise ValueError(f"--mae.decoder_dim={dim} is not a multiple of --mae.decoder_num_heads={heads}")

    @classmethod
    def resolve_config(cls, cfg: MaeConfig, shape: RunShape) -> None:
        small = shape.image_size < SMALL_IMAGE
        dim = fill(cfg, "decoder_dim", 128 if small else 512)
        fill(cfg, "decoder_depth", 4 if small else 8)
        fill(cfg, "decoder_num_heads", dim // 32 if dim % 32 == 0 and dim >= 32 else 1)
        cls.check_config(cfg)    # a given head count against the chosen width

    def __init__(self, cfg: MaeConfig, backbone: nn.Module, shape: RunShape):
        super().__init__(cfg, backbone, shape)
        dim, depth, heads = cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_num_heads
        self.backbone = backbone
        self.patch_size = backbone.patch_size
        self.n_patches = backbone.grid_size[0] * backbone.grid_size[1]
        if cfg.sincos_pos_embed:
            if backbone.embed_dim % 4:
                raise ValueError(f"sin-cos positions need an embed_dim divisible by 4 (got {backbone.embed_dim}): "
                                 "set --mae.sincos_pos_embed=false")
            fix_sincos_positions_(backbone)
        self.decoder = MaskedDecoder(backbone.embed_dim, backbone.grid_size, 3 * self.patch_size ** 2,
                                     dim=dim, depth=depth, num_heads=heads)

    def view_specs(self) -> list[ViewSpec]:
        return plain_views(self.shape.image_size, self.cfg.scale_min)

    def reconstruct(self, images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Pixels of every patch predicted from the visible ones: images (B,3,S,S), keep int64
        (B, n) -> (B, N, 3 p^2) in :func:`patchify`'s layout."""
        if images.shape[-2:] != (self.shape.image_size, self.shape.image_size):
            raise ValueError(f"MAE's decoder is built for {self.shape.image_size} px views, got "
                             f"{tuple(images.shape[-2:])}")
        tokens = self.backbone.forward_tokens(images, keep=keep)     # (B, 1 + n, D): CLS + visible
        return self.decoder(tokens, keep)                            # (B, N, 3 p^2)

    def training_step(self, views, info):
        images = views[0]                                            # (B, 3, S, S), one view
        keep, mask = random_masking(images.shape[0], self.n_patches, self.cfg.mask_ratio, images.device)
        pred = self.reconstruct(images, keep)
        loss = masked_mse(pred, patchify(images, self.patch_size), mask, self.cfg.norm_pix_loss)
        return loss, {}
