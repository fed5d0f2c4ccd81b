"""Relative patch location (Doersch, Gupta and Efros, "Unsupervised Visual Representation
Learning by Context Prediction", ICCV 2015; thesis Section 2.1; lecture 002, "Relative
Position of Image Patches").

A 3x3 grid of patches with gaps and jitter is laid over one augmented view (``ops.tiles``,
shared with the jigsaw); the centre patch and one of its 8 neighbours, drawn uniformly per
image, go through the shared backbone (the paper's pair of weight-tied towers, Fig. 3),
their features are concatenated (centre first) and an MLP predicts which of the 8
neighbour positions (``ops.tiles.NEIGHBOUR_OFFSETS``, raster order) the second patch was
taken from (8-way cross-entropy).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nolabel.heads import mlp
from nolabel.methods import register
from nolabel.methods._siamese import ADAMW_SMALL_BATCH
from nolabel.methods.base import Method, RunShape
from nolabel.monitor import pretext_health
from nolabel.ops.tiles import (NEIGHBOUR_OFFSETS, cut_tiles, encode_tiles, normalize_tiles, sample_tile_origins,
                               tile_grid)
from nolabel.view_presets import tile_views

GRID = 3
N_POSITIONS = len(NEIGHBOUR_OFFSETS)   # 8


@dataclass
class RelativeLocConfig:
    # Patch side / cell side: 96 px patches with gaps of half a patch, 48 px (Section 3.1),
    # i.e. 96 / (96 + 48) = 2/3 of a cell.
    tile_fraction: float = 2 / 3
    # Jitter of each patch position, as a fraction of the patch side: "up to 7 pixels" on
    # 96 px patches (Section 3.1), 7/96.
    jitter_fraction: float = 7 / 96
    # Per-patch mean/std normalisation (the paper subtracts the mean of each patch and
    # drops colour channels against chromatic aberration, Section 3.1); grayscale below.
    normalize_tiles: bool = True
    # Head: concatenated pair features (2 x D) -> hidden -> 8; the paper's fc7/fc8 have
    # 4096 units (Fig. 3). Smaller default for small data.
    hidden_dim: int = 1024
    # The view the grid is laid over: area (0.5, 1), flips, colour jitter and grayscale
    # p 0.3 (colour dropping, Section 3.1).
    crop_scale_min: float = 0.5
    grayscale: float = 0.3


@register
class RelativeLoc(Method):
    name = "relativeloc"
    Config = RelativeLocConfig
    # Paper (Section 4): SGD with batch norm, lr 0.01-ish, batch 128-256 for weeks on
    # ImageNet (--optim.optimizer=sgd --optim.lr=0.01). Default AdamW (ADAMW_SMALL_BATCH):
    # the default backbone is a ViT, trained with AdamW at small batches in nolabel.
    default_optim = dict(ADAMW_SMALL_BATCH)
    encoder_prefix = "backbone"

    def __init__(self, cfg: RelativeLocConfig, backbone: nn.Module, shape: RunShape):
        super().__init__(cfg, backbone, shape)
        self.backbone = backbone
        self.layout = tile_grid(shape.image_size, cfg.tile_fraction, cfg.jitter_fraction, grid=GRID)
        neighbours = [self.layout.neighbour_index(k) for k in range(N_POSITIONS)]
        self.register_buffer("neighbour_cells", torch.tensor(neighbours), persistent=False)   # (8,)
        self.head = mlp(2 * backbone.num_features, cfg.hidden_dim, N_POSITIONS, n_layers=2, norm="bn")

    def view_specs(self):
        return tile_views(self.shape.image_size, self.cfg.crop_scale_min, self.cfg.grayscale)

    def make_pairs(self, view: Tensor) -> tuple[Tensor, Tensor]:
        """view (B,3,S,S) -> (pairs (B, 2, 3, t, t): centre then neighbour, labels (B,) in 0..7)."""
        b = view.shape[0]
        labels = torch.randint(N_POSITIONS, (b,))
        origins = sample_tile_origins(b, self.layout)                    # (B, 9, 2)
        cells = torch.stack([torch.full((b,), self.layout.centre), self.neighbour_cells.cpu()[labels]], dim=1)
        pair_origins = torch.gather(origins, 1, cells.unsqueeze(-1).expand(b, 2, 2))   # (B, 2, 2)
        pairs = cut_tiles(view, pair_origins, self.layout.tile)           # (B, 2, 3, t, t)
        if self.cfg.normalize_tiles:
            pairs = normalize_tiles(pairs)
        return pairs, labels.to(view.device)

    def training_step(self, views, info):
        pairs, labels = self.make_pairs(views[0])
        feats = encode_tiles(self.backbone, pairs)                       # (B, 2, D)
        logits = self.head(feats.flatten(1))                             # (B, 8)
        loss = F.cross_entropy(logits, labels)
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
        return loss, {"pretext_acc": accuracy, "chance": 1.0 / N_POSITIONS}

    def health(self, epoch_means):
        return pretext_health(epoch_means)
